"""AutoencoderKL-layout encoder and decoder (diffusers parameter names, SD-1.5 weight-compatible).

Decoder:  latent ─post_quant_conv─conv_in─ mid[resnet, attn, resnet] ─ up levels (top last):
          [resnet x (n+1), upsample] ─ GroupNorm ─ SiLU ─ conv_out ─> RGB
Encoder:  RGB ─conv_in─ down levels: [resnet x n, downsample] ─ mid ─ GroupNorm ─ SiLU ─ conv_out
          ─quant_conv─> (mean, logvar); we return the mean.
The light decoder of MobileDiffusion is the same layout with thinner levels.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .conv_blocks import Downsample, ResnetBlock, Upsample
from .vae_config import AutoencoderConfig


class VAEAttention(nn.Module):
    """Single-head spatial self-attention with a residual (diffusers' VAE mid-block attention)."""

    def __init__(self, channels: int, norm_groups: int):
        super().__init__()
        self.group_norm = nn.GroupNorm(norm_groups, channels, eps=1e-6)
        self.to_q = nn.Linear(channels, channels)
        self.to_k = nn.Linear(channels, channels)
        self.to_v = nn.Linear(channels, channels)
        self.to_out = nn.ModuleList([nn.Linear(channels, channels)])
        self.scale = channels ** -0.5

    def scores(self, q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        """q k^T, a method of its own so that an exporter can choose its lowering (tflite.py does)."""
        return torch.matmul(q, k.transpose(1, 2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, channels, height, width = x.shape
        tokens = self.group_norm(x).reshape(batch, channels, height * width).transpose(1, 2)
        q, k, v = self.to_q(tokens), self.to_k(tokens), self.to_v(tokens)
        weights = (self.scores(q, k) * self.scale).softmax(dim=-1)
        out = self.to_out[0](torch.matmul(weights, v))
        return x + out.transpose(1, 2).reshape(batch, channels, height, width)


class MidBlock(nn.Module):
    def __init__(self, channels: int, norm_groups: int, attention: bool):
        super().__init__()
        self.resnets = nn.ModuleList([ResnetBlock(channels, channels, None, norm_groups) for _ in range(2)])
        self.attentions = nn.ModuleList([VAEAttention(channels, norm_groups)]) if attention else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.resnets[0](x)
        if self.attentions is not None:
            x = self.attentions[0](x)
        return self.resnets[1](x)


class ResampleLevel(nn.Module):
    def __init__(self, resnets: list[nn.Module], resampler: nn.Module | None, attr: str):
        super().__init__()
        self.resnets = nn.ModuleList(resnets)
        # "upsamplers" / "downsamplers" as in diffusers so state dicts map without renames
        setattr(self, attr, nn.ModuleList([resampler]) if resampler is not None else None)
        self._attr = attr

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for res in self.resnets:
            x = res(x)
        resampler = getattr(self, self._attr)
        return x if resampler is None else resampler[0](x)


class KLDecoder(nn.Module):
    def __init__(self, config: AutoencoderConfig):
        super().__init__()
        c = config
        widths = list(reversed(c.block_out_channels))
        self.post_quant_conv = nn.Conv2d(c.latent_channels, c.latent_channels, 1) if c.quant_conv else None
        self.conv_in = nn.Conv2d(c.latent_channels, widths[0], 3, padding=1)
        self.mid_block = MidBlock(widths[0], c.norm_groups, c.mid_attention)
        self.up_blocks = nn.ModuleList()
        current = widths[0]
        for index, width in enumerate(widths):
            resnets = []
            for _ in range(c.layers_per_block + 1):
                resnets.append(ResnetBlock(current, width, None, c.norm_groups))
                current = width
            last = index == len(widths) - 1
            self.up_blocks.append(ResampleLevel(resnets, None if last else Upsample(width), "upsamplers"))
        self.conv_norm_out = nn.GroupNorm(c.norm_groups, widths[-1], eps=1e-6)
        self.conv_out = nn.Conv2d(widths[-1], 3, 3, padding=1)

    def forward(self, latent: torch.Tensor) -> torch.Tensor:
        if self.post_quant_conv is not None:
            latent = self.post_quant_conv(latent)
        h = self.mid_block(self.conv_in(latent))
        for block in self.up_blocks:
            h = block(h)
        return self.conv_out(F.silu(self.conv_norm_out(h)))


class KLEncoder(nn.Module):
    def __init__(self, config: AutoencoderConfig):
        super().__init__()
        c = config
        widths = c.block_out_channels
        self.latent_channels = c.latent_channels
        self.conv_in = nn.Conv2d(3, widths[0], 3, padding=1)
        self.down_blocks = nn.ModuleList()
        current = widths[0]
        for index, width in enumerate(widths):
            resnets = []
            for _ in range(c.layers_per_block):
                resnets.append(ResnetBlock(current, width, None, c.norm_groups))
                current = width
            last = index == len(widths) - 1
            down = None if last else Downsample(width, asymmetric_pad=True)
            self.down_blocks.append(ResampleLevel(resnets, down, "downsamplers"))
        self.mid_block = MidBlock(widths[-1], c.norm_groups, c.mid_attention)
        self.conv_norm_out = nn.GroupNorm(c.norm_groups, widths[-1], eps=1e-6)
        self.conv_out = nn.Conv2d(widths[-1], 2 * c.latent_channels, 3, padding=1)
        self.quant_conv = nn.Conv2d(2 * c.latent_channels, 2 * c.latent_channels, 1) if c.quant_conv else None

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        h = self.conv_in(image)
        for block in self.down_blocks:
            h = block(h)
        moments = self.conv_out(F.silu(self.conv_norm_out(self.mid_block(h))))
        if self.quant_conv is not None:
            moments = self.quant_conv(moments)
        return moments[:, : self.latent_channels]  # the mean; the log-variance is not needed downstream
