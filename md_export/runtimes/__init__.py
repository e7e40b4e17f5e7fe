"""One runner interface for every runtime: numpy dict in, numpy dict out.

The pipeline, parity and benchmarks only see `Runner`; torch, onnxruntime, LiteRT and Core ML
each provide one implementation. `open_artifact` picks the runner a manifest entry needs.
"""

from .base import ArtifactLoadError, InputMismatchError, Runner, RuntimeUnavailableError, TensorSpec
from .open import open_artifact
from .torch_runner import TorchRunner

__all__ = ["ArtifactLoadError", "InputMismatchError", "Runner", "RuntimeUnavailableError", "TensorSpec",
           "TorchRunner", "open_artifact"]
