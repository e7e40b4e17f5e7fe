"""One runner interface for every runtime: numpy dict in, numpy dict out.

The pipeline, parity and benchmarks only see `Runner`; torch, onnxruntime, LiteRT and Core ML
each provide one implementation.
"""

from .base import Runner, TensorSpec
from .torch_runner import TorchRunner

__all__ = ["Runner", "TensorSpec", "TorchRunner"]
