"""TAESD-style tiny autoencoder: plain conv + ReLU, no normalisation, ~1.2M params per side.

Decoder: latent ─3·tanh(x/3)─conv─ReLU─ [blocks ─ upsample x2 ─ conv] x3 ─ blocks ─conv─> RGB in [0,1]
Encoder: RGB in [0,1] ─conv─ block ─ [stride-2 conv ─ blocks] x3 ─conv─> latent
Parameter names follow the public TAESD layout (an indexed nn.Sequential).
"""

from __future__ import annotations

import torch
from torch import nn

from .vae_config import AutoencoderConfig


def conv(cin: int, cout: int, **kwargs) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 3, padding=1, **kwargs)


class TAESDBlock(nn.Module):
    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.conv = nn.Sequential(conv(cin, cout), nn.ReLU(), conv(cout, cout), nn.ReLU(), conv(cout, cout))
        self.skip = nn.Conv2d(cin, cout, 1, bias=False) if cin != cout else nn.Identity()
        self.fuse = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fuse(self.conv(x) + self.skip(x))


class Clamp(nn.Module):
    """Soft clamp of latents to (-3, 3): keeps outliers from saturating a small decoder."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(x / 3) * 3


class TAESDDecoder(nn.Module):
    def __init__(self, config: AutoencoderConfig):
        super().__init__()
        ch = config.taesd_channels
        layers: list[nn.Module] = [Clamp(), conv(config.latent_channels, ch), nn.ReLU()]
        for stage, blocks in enumerate(config.taesd_blocks):
            layers += [TAESDBlock(ch, ch) for _ in range(blocks)]
            if stage < len(config.taesd_blocks) - 1:
                layers += [nn.Upsample(scale_factor=2), conv(ch, ch, bias=False)]
        layers.append(conv(ch, 3))
        self.layers = nn.Sequential(*layers)

    def forward(self, latent: torch.Tensor) -> torch.Tensor:
        return self.layers(latent)


class TAESDEncoder(nn.Module):
    def __init__(self, config: AutoencoderConfig):
        super().__init__()
        ch = config.taesd_channels
        layers: list[nn.Module] = [conv(3, ch), TAESDBlock(ch, ch)]
        for blocks in reversed(config.taesd_blocks[:-1]):
            layers.append(conv(ch, ch, stride=2, bias=False))
            layers += [TAESDBlock(ch, ch) for _ in range(blocks)]
        layers.append(conv(ch, config.latent_channels))
        self.layers = nn.Sequential(*layers)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.layers(image)
