"""Learning-rate schedule and weight EMA shared by both training phases."""

from __future__ import annotations

import math

import torch
from torch import nn


def learning_rate(base: float, step: int, total: int, warmup: int) -> float:
    """Linear warm-up, then cosine decay to 10% of `base`."""
    if step < warmup:
        return base * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return base * (0.1 + 0.9 * 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress))))


def set_learning_rate(optimizer: torch.optim.Optimizer, value: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = value


class EMA:
    """Exponential moving average of parameters; warms up so early steps are not frozen in."""

    def __init__(self, modules: dict[str, nn.Module], decay: float):
        self.decay = decay
        self.shadow = {name: {k: v.detach().clone() for k, v in m.state_dict().items()} for name, m in modules.items()}

    @torch.no_grad()
    def update(self, modules: dict[str, nn.Module], step: int) -> None:
        decay = min(self.decay, (1 + step) / (10 + step))
        for name, module in modules.items():
            for key, value in module.state_dict().items():
                shadow = self.shadow[name][key]
                if value.dtype.is_floating_point:
                    shadow.mul_(decay).add_(value.detach(), alpha=1.0 - decay)
                else:
                    shadow.copy_(value)

    def state_dict(self) -> dict:
        return self.shadow

    def load_state_dict(self, state: dict) -> None:
        self.shadow = state
