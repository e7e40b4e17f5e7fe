"""Structured channel pruning of the UNet's inner widths, with the coupled tensors pruned together.

What is narrowed (the residual stream, skips and attention heads keep their widths, so no
dependency crosses a block and every attention head stays whole):
- each residual block's inner width, between conv1 and conv2. Coupled: conv1's output filters
  (the pointwise conv when separable), time_emb_proj's rows, norm2's affine, conv2's input
  (its depthwise filters and pointwise columns when separable);
- each gated FFN's inner width. Coupled: the value row i and the gate row inner+i of `proj`, and
  column i of `out`.
Channels are ranked by the product of the L2 norms of their producing and consuming weights, and
counts are rounded to multiples of 8 (and of the GroupNorm groups, which must divide them).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from md_export.models.conv_blocks import SeparableConv2d
from md_export.models.unet import MobileUNet

from .errors import PruneError
from .rebuild import Keep, rebuild_unet
from .structure import live_resnets, resnets, top_in_order, transformer_blocks

MULTIPLE = 8


@dataclass(frozen=True)
class ChannelResult:
    target_fraction: float
    fraction: float  # channels removed / prunable channels (after rounding)
    channels_before: int
    channels_after: int


def kept_count(width: int, fraction: float, multiple: int) -> int:
    target = width * (1.0 - fraction)
    return max(multiple, min(width, int(round(target / multiple)) * multiple))


def _rows_norm(weight: torch.Tensor) -> torch.Tensor:
    return weight.detach().flatten(1).norm(dim=1)


@torch.no_grad()
def channel_prune(unet: MobileUNet, fraction: float) -> tuple[MobileUNet, ChannelResult]:
    if not 0.0 < fraction < 1.0:
        raise PruneError(f"channel fraction must be in (0, 1), got {fraction}")
    config = unet.config
    multiple = math.lcm(MULTIPLE, config.norm_groups)
    keep: Keep = {}
    before = after = 0
    inner = list(config.resnet_inner_channels) or [None] * config.resnet_slots()
    for index, prefix, block in live_resnets(unet):
        separable = isinstance(block.conv1, SeparableConv2d)
        producer = block.conv1.pointwise if separable else block.conv1
        width = producer.out_channels
        count = kept_count(width, fraction, multiple)
        if separable:
            depthwise = block.conv2.depthwise.weight.detach().flatten(1).norm(dim=1, keepdim=True)
            consumer = block.conv2.pointwise.weight.detach()[:, :, 0, 0].t() * depthwise
        else:
            consumer = block.conv2.weight.detach().transpose(0, 1)
        scores = _rows_norm(producer.weight) * _rows_norm(consumer)
        kept = top_in_order(scores, count)
        conv1 = f"{prefix}.conv1.pointwise" if separable else f"{prefix}.conv1"
        for key in (f"{conv1}.weight", f"{conv1}.bias", f"{prefix}.time_emb_proj.weight",
                    f"{prefix}.time_emb_proj.bias", f"{prefix}.norm2.weight", f"{prefix}.norm2.bias"):
            keep[key] = [(0, kept)]
        if separable:
            for key in (f"{prefix}.conv2.depthwise.weight", f"{prefix}.conv2.depthwise.bias"):
                keep[key] = [(0, kept)]
            keep[f"{prefix}.conv2.pointwise.weight"] = [(1, kept)]
        else:
            keep[f"{prefix}.conv2.weight"] = [(1, kept)]
        inner[index] = count
        before, after = before + width, after + count
    # Removed residual blocks keep a placeholder entry (their width is never built).
    inner = [value if value is not None else resnet_width(unet, i) for i, value in enumerate(inner)]

    ffn_dims = []
    for prefix, block in transformer_blocks(unet):
        proj, out = block.ff.proj, block.ff.out
        width = out.in_features
        count = kept_count(width, fraction, MULTIPLE)
        value, gate = proj.weight.detach()[:width], proj.weight.detach()[width:]
        scores = _rows_norm(value) * _rows_norm(gate) * _rows_norm(out.weight.detach().t())
        kept = top_in_order(scores, count)
        both = torch.cat([kept, kept + width])
        keep[f"{prefix}.ff.proj.weight"] = [(0, both)]
        keep[f"{prefix}.ff.proj.bias"] = [(0, both)]
        keep[f"{prefix}.ff.out.weight"] = [(1, kept)]
        ffn_dims.append(count)
        before, after = before + width, after + count

    new_config = config.replace(resnet_inner_channels=tuple(inner), ffn_inner_dims=tuple(ffn_dims))
    pruned = rebuild_unet(unet, new_config, keep=keep)
    return pruned, ChannelResult(fraction, 1.0 - after / before, before, after)


def resnet_width(unet: MobileUNet, index: int) -> int:
    """The output width of residual block `index` (what a removed block's inner entry records)."""
    prefix, _ = resnets(unet)[index]
    level = int(prefix.split(".")[1]) if not prefix.startswith("mid") else None
    widths = unet.config.block_out_channels
    if level is None:
        return widths[-1]
    if prefix.startswith("down"):
        return widths[level]
    return widths[unet.config.levels - 1 - level]
