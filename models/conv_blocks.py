"""Convolutional building blocks shared by the UNet and the VAE (diffusers-compatible names)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class SeparableConv2d(nn.Module):
    """Depthwise 3x3 followed by pointwise 1x1: ~9x fewer weights than a full 3x3 conv."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.depthwise = nn.Conv2d(in_channels, in_channels, 3, padding=1, groups=in_channels)
        self.pointwise = nn.Conv2d(in_channels, out_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pointwise(self.depthwise(x))


def conv3x3(in_channels: int, out_channels: int, separable: bool = False) -> nn.Module:
    if separable:
        return SeparableConv2d(in_channels, out_channels)
    return nn.Conv2d(in_channels, out_channels, 3, padding=1)


class ResnetBlock(nn.Module):
    """GroupNorm-SiLU-conv twice, optional timestep injection, 1x1 shortcut when widths differ."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        temb_channels: int | None,
        norm_groups: int = 32,
        eps: float = 1e-6,
        separable: bool = False,
        inner_channels: int | None = None,
    ):
        super().__init__()
        # inner_channels: width between conv1 and conv2 (channel pruning narrows it; default out_channels)
        inner = inner_channels or out_channels
        self.norm1 = nn.GroupNorm(norm_groups, in_channels, eps=eps)
        self.conv1 = conv3x3(in_channels, inner, separable)
        self.time_emb_proj = nn.Linear(temb_channels, inner) if temb_channels else None
        self.norm2 = nn.GroupNorm(norm_groups, inner, eps=eps)
        self.conv2 = conv3x3(inner, out_channels, separable)
        self.conv_shortcut = nn.Conv2d(in_channels, out_channels, 1) if in_channels != out_channels else None

    def forward(self, x: torch.Tensor, temb: torch.Tensor | None = None) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        if self.time_emb_proj is not None:
            h = h + self.time_emb_proj(F.silu(temb))[:, :, None, None]
        h = self.conv2(F.silu(self.norm2(h)))
        shortcut = x if self.conv_shortcut is None else self.conv_shortcut(x)
        return shortcut + h


class SkippedResnet(nn.Module):
    """A residual block removed by pruning: passes the features through (no weights)."""

    def forward(self, x: torch.Tensor, temb: torch.Tensor | None = None) -> torch.Tensor:
        return x


class Downsample(nn.Module):
    """Stride-2 3x3 conv. `asymmetric_pad` is the VAE encoder's (0,1,0,1) padding."""

    def __init__(self, channels: int, asymmetric_pad: bool = False):
        super().__init__()
        self.asymmetric_pad = asymmetric_pad
        self.conv = nn.Conv2d(channels, channels, 3, stride=2, padding=0 if asymmetric_pad else 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.asymmetric_pad:
            x = F.pad(x, (0, 1, 0, 1))
        return self.conv(x)


class Upsample(nn.Module):
    """Nearest-neighbour x2 then 3x3 conv (no transposed conv: cheaper and artifact-free on phones)."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))
