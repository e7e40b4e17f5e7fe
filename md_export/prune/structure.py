"""Where the prunable parts of a MobileUNet live, in the build order UNetConfig's pruning fields use."""

from __future__ import annotations

import torch
from torch import nn

from md_export.models.attention import BasicTransformerBlock, SpatialTransformer
from md_export.models.conv_blocks import ResnetBlock
from md_export.models.unet import MobileUNet


def resnets(unet: MobileUNet) -> list[tuple[str, nn.Module]]:
    """(state-dict prefix, module) of every residual block (removed ones included), build order."""
    out = []
    for i, level in enumerate(unet.down_blocks):
        out += [(f"down_blocks.{i}.resnets.{j}", m) for j, m in enumerate(level.resnets)]
    out += [(f"mid_resnets.{j}", m) for j, m in enumerate(unet.mid_resnets)]
    for i, level in enumerate(unet.up_blocks):
        out += [(f"up_blocks.{i}.resnets.{j}", m) for j, m in enumerate(level.resnets)]
    return out


def transformer_slots(unet: MobileUNet) -> list[tuple[str, nn.Module]]:
    """(prefix, SpatialTransformer or SkippedTransformer) per transformer slot, build order."""
    out = []
    for i, level in enumerate(unet.down_blocks):
        if level.attentions is not None:
            out += [(f"down_blocks.{i}.attentions.{j}", m) for j, m in enumerate(level.attentions)]
    if unet.mid_attention is not None:
        out.append(("mid_attention", unet.mid_attention))
    for i, level in enumerate(unet.up_blocks):
        if level.attentions is not None:
            out += [(f"up_blocks.{i}.attentions.{j}", m) for j, m in enumerate(level.attentions)]
    return out


def transformer_blocks(unet: MobileUNet) -> list[tuple[str, BasicTransformerBlock]]:
    """(prefix, block) of every kept transformer block, build order (= UNetConfig.ffn_inner_dims order)."""
    out = []
    for prefix, slot in transformer_slots(unet):
        if isinstance(slot, SpatialTransformer):
            out += [(f"{prefix}.transformer_blocks.{k}", b) for k, b in enumerate(slot.transformer_blocks)]
    return out


def live_resnets(unet: MobileUNet) -> list[tuple[int, str, ResnetBlock]]:
    return [(i, p, m) for i, (p, m) in enumerate(resnets(unet)) if isinstance(m, ResnetBlock)]


def weight_count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def top_in_order(scores: torch.Tensor, count: int) -> torch.Tensor:
    """Indices of the `count` highest scores, in their original order (kept channels / heads)."""
    return torch.sort(torch.topk(scores, count).indices).values
