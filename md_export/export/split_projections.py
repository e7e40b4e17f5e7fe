"""Export-time rewrite shared by the ONNX and LiteRT backends: a gated feed-forward's projection as
two matmuls instead of one sliced in two.

    before:  x ─ proj (dim -> 2 x inner) ─ [value | gate] ─ slice, slice ─ value * act(gate)
    after:   x ─┬─ proj.value_weight (dim -> inner) ── value ─┐
                └─ proj.gate_weight  (dim -> inner) ── gate ──┴─ value * act(gate)

The runtimes copied the sliced halves out of the projection's output: onnxruntime through a Split
(the two Slices fused), LiteRT through two strided slices. Two matmuls write the halves where they
are read. The halves are views of `proj`'s weight rows (no copy) and live in `proj`'s scope, so the
exported nodes still name a module of the network; the module is restored on exit, so checkpoints
and the torch reference keep one `proj`.
"""

from __future__ import annotations

import contextlib
import types
from collections.abc import Iterable, Iterator

import torch
import torch.nn.functional as F
from torch import nn

_HALVES = ("value_weight", "value_bias", "gate_weight", "gate_bias")


def _gated_forward(self, x: torch.Tensor) -> torch.Tensor:
    value, gate = self.proj(x)
    gate = F.gelu(gate) if self.activation == "gelu" else F.silu(gate)
    return self.out(value * gate)


def _projection_halves(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return F.linear(x, self.value_weight, self.value_bias), F.linear(x, self.gate_weight, self.gate_bias)


@contextlib.contextmanager
def gated_projections_split(modules: Iterable[nn.Module]) -> Iterator[int]:
    """While converting, every GatedFeedForward below `modules` projects with two matmuls.

    Measured on the `mobilediffusion` UNet at 512 (23 FFNs), 2-core Xeon, alternating calls,
    outputs bit-identical (244 dB PSNR between the graphs):
      onnxruntime static int8   520.8 -> 497.1 ms and 477.3 -> 453.8 ms (two exports, 10 calls;
                                the Splits took 20.1 ms of kernel time a call), fp32 1,397.7 -> 1,369.0
      LiteRT dynamic int8       265.3 -> 257.9 ms (8 calls) and 272.4 -> 257.8 ms (10), fp32
                                1,691.8 -> 1,669.9 ms (5)
    Core ML is not converted this way: its speed cannot be measured off macOS.
    Yields how many projections were split; release_weights inside the block frees the halves too
    (they are parameters of `proj` until exit)."""
    from md_export.models.attention import GatedFeedForward

    found = list({id(m): m for module in modules for m in module.modules() if isinstance(m, GatedFeedForward)}.values())
    for ff in found:
        proj, inner = ff.proj, ff.proj.out_features // 2
        for half, rows in (("value", slice(0, inner)), ("gate", slice(inner, 2 * inner))):
            proj.register_parameter(f"{half}_weight", nn.Parameter(proj.weight.detach()[rows], requires_grad=False))
            bias = None if proj.bias is None else nn.Parameter(proj.bias.detach()[rows], requires_grad=False)
            proj.register_parameter(f"{half}_bias", bias)
        proj.forward = types.MethodType(_projection_halves, proj)
        ff.forward = types.MethodType(_gated_forward, ff)
    try:
        yield len(found)
    finally:
        for ff in found:
            for name in _HALVES:
                delattr(ff.proj, name)
            del ff.proj.forward, ff.forward
