"""Structured attention-head pruning: whole heads leave every attention of every transformer block.

A head h of an attention owns rows [h*d, (h+1)*d) of to_q, to_k / to_v (or the shared to_kv) and
the same columns of to_out; those tensors lose the head together, nothing else changes shape (the
token stream keeps its width, head_dim stays d, so the attention scale is unchanged). A block's
self- and cross-attention keep the same number of heads (UNetConfig.attention_heads is one entry
per block), each choosing its own heads. Heads are ranked by the product of the L2 norms of their
query, key, value and output weights: a head whose logits (q.k) or whose contribution (v, out)
is small matters little.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from md_export.models.attention import Attention
from md_export.models.unet import MobileUNet

from .errors import PruneError
from .rebuild import Keep, rebuild_unet
from .structure import top_in_order, transformer_blocks


@dataclass(frozen=True)
class HeadResult:
    target_fraction: float
    fraction: float  # heads removed / heads before (over every attention)
    heads_before: int
    heads_after: int


def kept_heads(heads: int, fraction: float) -> int:
    return max(1, min(heads, int(round(heads * (1.0 - fraction)))))


def head_scores(attention: Attention) -> torch.Tensor:
    """(heads,) importance of each head of one attention."""
    def per_head(weight: torch.Tensor) -> torch.Tensor:  # rows grouped by head
        return weight.detach().reshape(attention.heads, -1).norm(dim=1)

    key = attention.to_kv.weight if attention.shared_kv else attention.to_k.weight
    value = attention.to_kv.weight if attention.shared_kv else attention.to_v.weight
    out = attention.to_out[0].weight.detach().t()  # (inner, dim): rows grouped by head
    return per_head(attention.to_q.weight) * per_head(key) * per_head(value) * per_head(out)


def _head_rows(heads: torch.Tensor, head_dim: int) -> torch.Tensor:
    return (heads[:, None] * head_dim + torch.arange(head_dim)[None, :]).reshape(-1)


@torch.no_grad()
def head_prune(unet: MobileUNet, fraction: float) -> tuple[MobileUNet, HeadResult]:
    if not 0.0 < fraction < 1.0:
        raise PruneError(f"head fraction must be in (0, 1), got {fraction}")
    keep: Keep = {}
    counts, before, after = [], 0, 0
    for prefix, block in transformer_blocks(unet):
        attentions = (["attn1"] if block.has_self_attention else []) + ["attn2"]
        heads = block.attn2.heads
        count = kept_heads(heads, fraction)
        for name in attentions:
            attention = getattr(block, name)
            kept = top_in_order(head_scores(attention), count)
            rows = _head_rows(kept, attention.head_dim)
            projections = ["to_kv"] if attention.shared_kv else ["to_k", "to_v"]
            for projection in ["to_q", *projections]:
                keep[f"{prefix}.{name}.{projection}.weight"] = [(0, rows)]
            keep[f"{prefix}.{name}.to_out.0.weight"] = [(1, rows)]
            before, after = before + heads, after + count
        counts.append(count)
    if not counts:
        raise PruneError("this UNet has no transformer blocks: no attention heads to prune")
    pruned = rebuild_unet(unet, unet.config.replace(attention_heads=tuple(counts)), keep=keep)
    return pruned, HeadResult(fraction, 1.0 - after / before, before, after)
