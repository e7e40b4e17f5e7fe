"""Block removal ranked by measured importance (BK-SDM style).

Candidates: every residual block whose input and output widths agree (it can become the identity)
and every transformer block (each is a residual update of the token stream). Importance of a
candidate = relative change of the UNet output when that one block is skipped, on calibration
inputs (or seeded random ones): ||y_skip - y||^2 / ||y||^2. The least important `count` go.
The result is a plain UNetConfig (skipped_resnets, transformer_depths, ffn_inner_dims,
attention_heads), so the model saves, reloads and exports like any preset.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import torch

from md_export.models.attention import SpatialTransformer
from md_export.models.unet import MobileUNet

from .errors import PruneError
from .rebuild import rebuild_unet
from .structure import live_resnets, transformer_slots


@dataclass(frozen=True)
class Candidate:
    kind: str  # "resnet" | "transformer"
    name: str  # state-dict prefix of the block
    resnet_index: int | None = None  # build-order index (resnets)
    slot: int | None = None  # transformer slot and block index within it (transformer blocks)
    block: int | None = None


@dataclass(frozen=True)
class BlockResult:
    requested: int
    removed: list[dict]  # {name, kind, importance}
    ranking: list[dict]  # every candidate, least important first


def candidates(unet: MobileUNet) -> list[Candidate]:
    out = [Candidate("resnet", prefix, resnet_index=i) for i, prefix, m in live_resnets(unet)
           if m.conv_shortcut is None]
    for slot, (prefix, module) in enumerate(transformer_slots(unet)):
        if isinstance(module, SpatialTransformer):
            out += [Candidate("transformer", f"{prefix}.transformer_blocks.{k}", slot=slot, block=k)
                    for k in range(len(module.transformer_blocks))]
    return out


def _skip_hook(module, args, output):
    return args[0]  # the block's input: a residual block / transformer block skipped


@torch.no_grad()
def importance(unet: MobileUNet, inputs: tuple[torch.Tensor, ...]) -> list[tuple[Candidate, float]]:
    unet.eval()
    reference = unet(*inputs)
    energy = reference.pow(2).sum().clamp_min(1e-12)
    scores = []
    for candidate in candidates(unet):
        handle = unet.get_submodule(candidate.name).register_forward_hook(_skip_hook)
        try:
            change = (unet(*inputs) - reference).pow(2).sum() / energy
        finally:
            handle.remove()
        scores.append((candidate, float(change)))
    return scores


def remove_blocks(unet: MobileUNet, count: int, inputs: tuple[torch.Tensor, ...]) -> tuple[MobileUNet, BlockResult]:
    ranked = sorted(importance(unet, inputs), key=lambda item: item[1])
    if not 1 <= count <= len(ranked):
        raise PruneError(f"can remove 1..{len(ranked)} blocks from this UNet, asked for {count}")
    removed = [c for c, _ in ranked[:count]]
    config = unet.config
    slots = transformer_slots(unet)
    depths = list(config.transformer_depths) or list(config.default_transformer_depths())
    # kept blocks per slot, in order: maps each new block index to its old one
    kept_blocks = {slot: [k for k in range(depths[slot])
                          if not any(c.slot == slot and c.block == k for c in removed)]
                   for slot in range(len(slots))}

    def surviving(per_block: tuple[int, ...]) -> tuple[int, ...]:
        """A per-transformer-block config field without the removed blocks (empty stays empty)."""
        if not per_block:
            return ()
        kept, offset = [], 0
        for slot in range(len(slots)):
            kept += [per_block[offset + k] for k in kept_blocks[slot]]
            offset += depths[slot]
        return tuple(kept)

    new_depths = tuple(len(kept_blocks[slot]) for slot in range(len(slots)))
    skipped = tuple(sorted(set(config.skipped_resnets) | {c.resnet_index for c in removed if c.kind == "resnet"}))
    new_config = config.replace(skipped_resnets=skipped, transformer_depths=new_depths,
                                ffn_inner_dims=surviving(config.ffn_inner_dims),
                                attention_heads=surviving(config.attention_heads))
    prefixes = {prefix: slot for slot, (prefix, _) in enumerate(slots)}
    pattern = re.compile(r"^(.*)\.transformer_blocks\.(\d+)\.(.*)$")

    def rename(key: str) -> str:
        match = pattern.match(key)
        if not match or match.group(1) not in prefixes:
            return key
        old_index = kept_blocks[prefixes[match.group(1)]][int(match.group(2))]
        return f"{match.group(1)}.transformer_blocks.{old_index}.{match.group(3)}"

    pruned = rebuild_unet(unet, new_config, rename=rename)
    scores = dict((c.name, s) for c, s in ranked)
    return pruned, BlockResult(
        count,
        [{"name": c.name, "kind": c.kind, "importance": scores[c.name]} for c in removed],
        [{"name": c.name, "kind": c.kind, "importance": s} for c, s in ranked],
    )
