"""The PyTorch reference as a runner (eager, no grad, float32)."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from .base import Runner, TensorSpec


class TorchRunner(Runner):
    runtime = "torch"

    def __init__(self, module: nn.Module, example_inputs: tuple[torch.Tensor, ...]):
        """`example_inputs` fix the input specs (batch and spatial sizes are checked, -1 = any)."""
        self.module = module.eval()
        names = tuple(module.input_names)
        self._inputs = tuple(
            TensorSpec(name, (-1,) + tuple(t.shape[1:]), str(t.dtype).removeprefix("torch."))
            for name, t in zip(names, example_inputs)
        )
        self._outputs = tuple(module.output_names)

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        self.check_feeds(feeds)
        args = [torch.from_numpy(np.ascontiguousarray(feeds[spec.name])) for spec in self._inputs]
        with torch.inference_mode():
            out = self.module(*args)
        outs = out if isinstance(out, tuple) else (out,)
        return {name: t.numpy() for name, t in zip(self._outputs, outs)}
