"""MobileUNet: one UNet class whose config spans SD-1.5 and MobileDiffusion.

    latent (B,4,h,w) ─conv_in─┬─ level 0: [resnet (+transformer)] x n0 ─ downsample ─┐   skips
    timestep (B,) ─sinusoid─MLP─> temb (every resnet)                                  │   pushed
    text_emb (B,77,D) ─────────> context (every transformer)                           │   on a
                              ├─ level L-1: [resnet (+transformer)] x nL               │   stack
                              ├─ bottleneck or none: resnet, transformers, [resnet]    │
                              ├─ up level L-1 .. 0: [cat(skip) resnet (+transformer)] x (n+1), upsample
    prediction (B,4,h,w) <─conv_out─ SiLU ─ GroupNorm ─┘

Static shapes, no data-dependent Python control flow: `forward` traces the same graph for every
input, which torch.export, the ONNX exporters, coremltools and litert-torch all need.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .attention import SkippedTransformer, SpatialTransformer
from .conv_blocks import Downsample, ResnetBlock, SkippedResnet, Upsample
from .unet_config import UNetConfig


class TimestepEmbedding(nn.Module):
    """Sinusoidal features of the (float) timestep followed by a two-layer SiLU MLP."""

    def __init__(self, features: int, embed_dim: int):
        super().__init__()
        half = features // 2
        frequencies = torch.exp(-math.log(10000.0) * torch.arange(half, dtype=torch.float32) / half)
        self.register_buffer("frequencies", frequencies, persistent=False)
        self.linear_1 = nn.Linear(features, embed_dim)
        self.linear_2 = nn.Linear(embed_dim, embed_dim)

    def forward(self, timestep: torch.Tensor) -> torch.Tensor:
        angles = timestep.float()[:, None] * self.frequencies[None, :]
        # cos first, as SD-1.5 (flip_sin_to_cos=True)
        features = torch.cat([torch.cos(angles), torch.sin(angles)], dim=-1)
        return self.linear_2(F.silu(self.linear_1(features)))


class UNetLevel(nn.Module):
    """The resnets (each optionally followed by a transformer) of one level, plus its resampler.

    Called as a module (not reached into) so exported node names carry the full module path
    ("down_blocks.1/resnets.0/..."): quantization sensitivity reports use them.
    """

    def __init__(self, resnets: list[nn.Module], attentions: list[nn.Module] | None, resampler: nn.Module | None):
        super().__init__()
        self.resnets = nn.ModuleList(resnets)
        self.attentions = nn.ModuleList(attentions) if attentions else None
        self.resampler = resampler

    def forward(self, h: torch.Tensor, temb: torch.Tensor, context: torch.Tensor,
                skips: list[torch.Tensor] | None = None) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Down levels return every intermediate output (the skips); up levels consume `skips`."""
        outputs = []
        for index, res in enumerate(self.resnets):
            if skips is not None:
                h = torch.cat([h, skips.pop()], dim=1)
            h = res(h, temb)
            if self.attentions is not None:
                h = self.attentions[index](h, context)
            outputs.append(h)
        if self.resampler is not None:
            h = self.resampler(h)
            outputs.append(h)
        return h, outputs


class MobileUNet(nn.Module):
    input_names = ("latent", "timestep", "text_emb")
    output_names = ("prediction",)

    def __init__(self, config: UNetConfig):
        super().__init__()
        self.config = config
        c = config
        widths = c.block_out_channels
        self.conv_in = nn.Conv2d(c.in_channels, widths[0], 3, padding=1)
        self.time_embedding = TimestepEmbedding(widths[0], c.time_embed_dim)

        # Pruned structures (UNetConfig.resnet_inner_channels, ...) are consumed in build order.
        inner_channels = list(c.resnet_inner_channels) or [None] * c.resnet_slots()
        depths = list(c.transformer_depths) or list(c.default_transformer_depths())
        if len(inner_channels) != c.resnet_slots():
            raise ValueError(f"UNetConfig.resnet_inner_channels has {len(inner_channels)} entries, "
                             f"the UNet has {c.resnet_slots()} residual blocks")
        if len(depths) != len(c.default_transformer_depths()):
            raise ValueError(f"UNetConfig.transformer_depths has {len(depths)} entries, "
                             f"the UNet has {len(c.default_transformer_depths())} transformer slots")
        ffn_dims = list(c.ffn_inner_dims) or [None] * sum(depths)
        if len(ffn_dims) != sum(depths):
            raise ValueError(f"UNetConfig.ffn_inner_dims has {len(ffn_dims)} entries, "
                             f"the UNet keeps {sum(depths)} transformer blocks")
        kept_heads = list(c.attention_heads) or [None] * sum(depths)
        if len(kept_heads) != sum(depths):
            raise ValueError(f"UNetConfig.attention_heads has {len(kept_heads)} entries, "
                             f"the UNet keeps {sum(depths)} transformer blocks")
        if any(i >= c.resnet_slots() for i in c.skipped_resnets):
            raise ValueError(f"UNetConfig.skipped_resnets {c.skipped_resnets} out of range ({c.resnet_slots()} blocks)")
        counters = {"resnet": 0, "slot": 0, "block": 0}

        def resnet(cin: int, cout: int, level: int) -> nn.Module:
            index = counters["resnet"]
            counters["resnet"] += 1
            if index in c.skipped_resnets:
                if cin != cout:
                    raise ValueError(f"residual block {index} changes width {cin} -> {cout}: it cannot be removed")
                return SkippedResnet()
            # The top (highest-resolution) level keeps full convs: separable convs there save few
            # weights and cost the most quality (the paper's "edge" residual blocks).
            return ResnetBlock(cin, cout, c.time_embed_dim, c.norm_groups, c.norm_eps,
                               separable=c.separable_conv and level > 0, inner_channels=inner_channels[index])

        def transformer(level: int, depth: int, self_attention: bool) -> nn.Module:
            depth = depths[counters["slot"]]
            counters["slot"] += 1
            if depth == 0:
                return SkippedTransformer()
            first = counters["block"]
            counters["block"] += depth
            return SpatialTransformer(
                widths[level], depth, c.norm_groups, ffn_inner_dims=ffn_dims[first:first + depth],
                kept_heads=kept_heads[first:first + depth],
                context_dim=c.cross_attention_dim, heads=c.num_attention_heads[level],
                self_attention=self_attention, shared_kv=c.shared_kv, attention=c.attention,
                ffn_expansion=c.ffn_expansion, ffn_activation=c.ffn_activation,
                attention_implementation=c.attention_implementation,
            )

        skip_channels = [widths[0]]
        current = widths[0]
        self.down_blocks = nn.ModuleList()
        for level, width in enumerate(widths):
            resnets, attentions = [], []
            for _ in range(c.down_layers_per_level[level]):
                resnets.append(resnet(current, width, level))
                current = width
                skip_channels.append(current)
                if c.transformer_depth[level]:
                    attentions.append(transformer(level, c.transformer_depth[level], c.self_attention[level]))
            last = level == c.levels - 1
            self.down_blocks.append(UNetLevel(resnets, attentions, None if last else Downsample(width)))
            if not last:
                skip_channels.append(width)

        top = widths[-1]
        self.mid_resnets = nn.ModuleList([resnet(top, top, c.levels - 1) for _ in range(c.mid_resnets)])
        self.mid_attention = transformer(c.levels - 1, c.mid_transformer_depth, True) if c.mid_transformer_depth else None

        self.up_blocks = nn.ModuleList()
        for level in reversed(range(c.levels)):
            width = widths[level]
            resnets, attentions = [], []
            for _ in range(c.down_layers_per_level[level] + 1):
                resnets.append(resnet(current + skip_channels.pop(), width, level))
                current = width
                if c.transformer_depth[level]:
                    attentions.append(transformer(level, c.transformer_depth[level], c.self_attention[level]))
            self.up_blocks.append(UNetLevel(resnets, attentions, Upsample(width) if level > 0 else None))
        assert not skip_channels, "every skip connection must be consumed"

        self.conv_norm_out = nn.GroupNorm(c.norm_groups, widths[0], eps=c.norm_eps)
        self.conv_out = nn.Conv2d(widths[0], c.out_channels, 3, padding=1)

    def forward(self, latent: torch.Tensor, timestep: torch.Tensor, text_emb: torch.Tensor) -> torch.Tensor:
        temb = self.time_embedding(timestep)
        h = self.conv_in(latent)
        skips = [h]
        for block in self.down_blocks:
            h, outputs = block(h, temb, text_emb)
            skips.extend(outputs)

        for index, res in enumerate(self.mid_resnets):  # resnet, transformer, resnet (or no bottleneck)
            h = res(h, temb)
            if index == 0 and self.mid_attention is not None:
                h = self.mid_attention(h, text_emb)

        for block in self.up_blocks:
            h, _ = block(h, temb, text_emb, skips)

        return self.conv_out(F.silu(self.conv_norm_out(h)))


def build_unet(config: UNetConfig) -> MobileUNet:
    return MobileUNet(config)
