"""Unstructured global magnitude pruning: zero the smallest |w| of every conv / linear weight.

The tensors keep their shapes, so the model's config is unchanged and every exporter sees the
same graph. Dense runtimes (onnxruntime, LiteRT, Core ML without sparse kernels) do the same
work on zeros: this saves no time, only compressed size; structured pruning is what speeds up.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from .errors import PruneError


@dataclass(frozen=True)
class MagnitudeResult:
    target_sparsity: float
    sparsity: float  # zeros / weights over the pruned tensors (conv + linear weights)
    pruned_weights: int
    prunable_weights: int
    model_sparsity: float  # zeros / all parameters (biases, norms included)


def prunable_weights(module: nn.Module) -> list[torch.Tensor]:
    return [m.weight for m in module.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]


@torch.no_grad()
def magnitude_prune(module: nn.Module, sparsity: float) -> MagnitudeResult:
    """In place. One global threshold (not per layer): layers with small weights lose more."""
    if not 0.0 <= sparsity < 1.0:
        raise PruneError(f"magnitude sparsity must be in [0, 1), got {sparsity}")
    weights = prunable_weights(module)
    total = sum(w.numel() for w in weights)
    count = int(round(sparsity * total))
    if count:
        magnitudes = torch.cat([w.detach().abs().flatten() for w in weights])
        threshold = torch.kthvalue(magnitudes, count).values
        # Exactly `count` zeros: ties at the threshold (zeros already there, fp16-rounded weights)
        # would otherwise overshoot the target.
        pruned = magnitudes < threshold
        ties = torch.nonzero(magnitudes == threshold).flatten()[: count - int(pruned.sum())]
        pruned[ties] = True
        mask = ~pruned
        del magnitudes
        offset = 0
        for w in weights:
            w.mul_(mask[offset:offset + w.numel()].view_as(w))
            offset += w.numel()
    zeros = sum(int((w == 0).sum()) for w in weights)
    all_params = sum(p.numel() for p in module.parameters())
    all_zeros = sum(int((p == 0).sum()) for p in module.parameters())
    return MagnitudeResult(sparsity, zeros / total, zeros, total, all_zeros / all_params)
