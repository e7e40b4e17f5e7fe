"""Export-time rewrite shared by the ONNX and LiteRT backends: a gated feed-forward's projection as
two matmuls instead of one sliced in two.

    before:  x ─ proj (dim -> 2 x inner) ─ [value | gate] ─ slice, slice ─ value * act(gate)
    after:   x ─┬─ proj.value_weight (dim -> inner) ── value ─┐
                └─ proj.gate_weight  (dim -> inner) ── gate ──┴─ value * act(gate)

The runtimes copied the sliced halves out of the projection's output: onnxruntime through a Split
(the two Slices fused), LiteRT through two SLICE ops. Two matmuls write the halves where they are
read. The halves live in `proj`'s scope, so the exported nodes still name a module of the network;
the module is restored on exit, so checkpoints and the torch reference keep one `proj`.
"""

from __future__ import annotations

import contextlib
import types
from collections.abc import Iterable, Iterator

import torch
import torch.nn.functional as F
from torch import nn

from .method_swap import distinct_submodules

_HALVES = ("value_weight", "value_bias", "gate_weight", "gate_bias")


def _halves_from_proj(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return self.proj(x)  # inside proj's scope, so the nodes name a module of the network


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
    Yields how many projections were split. The halves are copies and the whole weight is empty
    until exit, when it is put back together bit for bit; release_weights inside the block frees
    the halves (parameters of `proj` until exit), and the whole weight stays empty then."""
    from md_export.models.attention import GatedFeedForward

    found = distinct_submodules(modules, lambda m: isinstance(m, GatedFeedForward))
    for ff in found:
        proj, inner = ff.proj, ff.proj.out_features // 2
        for name in ("weight", "bias"):
            whole = getattr(proj, name)
            for half, rows in (("value", slice(0, inner)), ("gate", slice(inner, 2 * inner))):
                part = None if whole is None else nn.Parameter(whole.detach()[rows].clone(), requires_grad=False)
                proj.register_parameter(f"{half}_{name}", part)
            if whole is not None:
                # Copies, and the whole weight emptied until exit. LiteRT's conversion of the
                # `mobilediffusion` UNet (its 23 projections hold 0.53 GB of its 1.56) peaked at
                # 7.41 GB with views of the whole weight, 6.89 GB so, 6.66 GB without the split
                # (max RSS of `md-export export --components unet --formats tflite`).
                whole.data = torch.empty(0, dtype=whole.dtype)
        proj.forward = types.MethodType(_projection_halves, proj)
        ff.halves = types.MethodType(_halves_from_proj, ff)  # forward's activation and `out` stay the module's
    try:
        yield len(found)
    finally:
        for ff in found:
            proj = ff.proj
            for name in ("weight", "bias"):
                whole, value, gate = getattr(proj, name), getattr(proj, f"value_{name}"), getattr(proj, f"gate_{name}")
                if whole is not None and value.numel():  # else release_weights freed the network meanwhile
                    whole.data = torch.cat([value.detach(), gate.detach()])
            for name in _HALVES:
                delattr(proj, name)
            del proj.forward, ff.halves
