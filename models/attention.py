"""Attention and transformer blocks of the UNet (names follow diffusers so SD-1.5 weights map 1:1).

Data flow of one `SpatialTransformer` (B,C,H,W feature map, text embedding (B,77,D)):

    x ──GroupNorm──proj_in(1x1)──> tokens (B,HW,C)
         │  for each BasicTransformerBlock:
         │    [self]  tokens += attn1(norm1(tokens))            (skipped in cross-only blocks)
         │    [cross] tokens += attn2(norm2(tokens), text_emb)
         │    [ffn]   tokens += ff(norm3(tokens))                (gated: GEGLU or Swish-GLU)
    x + proj_out(1x1)(tokens as B,C,H,W)

Attention is written as explicit matmuls (no fused SDPA) so every exporter sees the same ops and
so ReLU attention is the same graph with one op swapped.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class Attention(nn.Module):
    """Multi-head attention; `shared_kv` uses one projection for keys and values.

    `head_dim` defaults to query_dim // heads; head pruning keeps the original head_dim with fewer
    heads, so the projections map query_dim -> heads * head_dim -> query_dim.
    """

    def __init__(self, query_dim: int, context_dim: int, heads: int, shared_kv: bool, kind: str,
                 implementation: str = "batched", head_dim: int | None = None):
        super().__init__()
        if kind not in ("softmax", "relu"):
            raise ValueError(f"unknown attention kind {kind!r}")
        if implementation not in ("batched", "split_einsum"):
            raise ValueError(f"unknown attention implementation {implementation!r}")
        self.implementation = implementation
        self.heads = heads
        self.head_dim = head_dim or query_dim // heads
        self.scale = 1.0 / math.sqrt(self.head_dim)
        self.kind = kind
        self.shared_kv = shared_kv
        inner = heads * self.head_dim
        self.to_q = nn.Linear(query_dim, inner, bias=False)
        if shared_kv:
            self.to_kv = nn.Linear(context_dim, inner, bias=False)
        else:
            self.to_k = nn.Linear(context_dim, inner, bias=False)
            self.to_v = nn.Linear(context_dim, inner, bias=False)
        self.to_out = nn.ModuleList([nn.Linear(inner, query_dim)])

    def _split_heads(self, x: torch.Tensor) -> torch.Tensor:
        batch, tokens, _ = x.shape
        return x.reshape(batch, tokens, self.heads, self.head_dim).transpose(1, 2)

    def _weights(self, scores: torch.Tensor, keys: int) -> torch.Tensor:
        if self.kind == "softmax":
            return scores.softmax(dim=-1)
        # ReLU attention normalised by the key count keeps the output scale independent of L
        # (Wortsman et al. 2023); no exp, so no fp16 overflow on phones.
        return F.relu(scores) / keys

    def _split_einsum(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """One small einsum per head instead of a 4-D batched matmul: the layout Apple's Neural
        Engine runs best (ml-stable-diffusion's SPLIT_EINSUM idea). Same numbers, other graph."""
        outs = []
        for head in range(self.heads):
            span = slice(head * self.head_dim, (head + 1) * self.head_dim)
            scores = torch.einsum("bqd,bkd->bqk", q[..., span], k[..., span]) * self.scale
            outs.append(torch.einsum("bqk,bkd->bqd", self._weights(scores, k.shape[1]), v[..., span]))
        return torch.cat(outs, dim=-1)

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        context = x if context is None else context
        if self.implementation == "split_einsum":
            q = self.to_q(x)
            if self.shared_kv:
                k = v = self.to_kv(context)
            else:
                k, v = self.to_k(context), self.to_v(context)
            return self.to_out[0](self._split_einsum(q, k, v))
        q = self._split_heads(self.to_q(x))
        if self.shared_kv:
            k = v = self._split_heads(self.to_kv(context))
        else:
            k = self._split_heads(self.to_k(context))
            v = self._split_heads(self.to_v(context))
        scores = torch.matmul(q, k.transpose(-1, -2)) * self.scale
        out = torch.matmul(self._weights(scores, k.shape[-2]), v).transpose(1, 2)
        batch, tokens = out.shape[0], out.shape[1]
        return self.to_out[0](out.reshape(batch, tokens, self.heads * self.head_dim))


class GatedFeedForward(nn.Module):
    """dim -> expansion*dim (value half, gate half) -> act(gate)*value -> dim."""

    def __init__(self, dim: int, expansion: int, activation: str, inner_dim: int | None = None):
        super().__init__()
        if activation not in ("gelu", "silu"):
            raise ValueError(f"unknown FFN activation {activation!r}")
        inner = inner_dim or dim * expansion // 2  # inner_dim: set by channel pruning
        self.activation = activation
        self.proj = nn.Linear(dim, 2 * inner)
        self.out = nn.Linear(inner, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        value, gate = self.halves(x)
        gate = F.gelu(gate) if self.activation == "gelu" else F.silu(gate)
        return self.out(value * gate)

    def halves(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The projection's value and gate halves (the ONNX and LiteRT exports swap this method:
        export/split_projections.py)."""
        projected = self.proj(x)
        inner = projected.shape[-1] // 2
        # Two slices, not chunk(2): the dynamo exporter (optimize=False, as export/onnx.py runs it)
        # turns chunk into SplitToSequence + two SequenceAt, copies into and out of a tensor
        # sequence; onnxruntime fuses the two Slices into one Split. The static int8
        # `mobilediffusion` UNet at 512 (23 FFNs, 2-core Zen 3): 39.0 -> 13.2 ms of kernel time a
        # call, 1228 -> 1202 ms median (10 alternating calls), outputs bit-identical. The ONNX
        # and LiteRT exports go further: two matmuls, no copy.
        return projected[..., :inner], projected[..., inner:]


class BasicTransformerBlock(nn.Module):
    def __init__(
        self,
        dim: int,
        context_dim: int,
        heads: int,
        self_attention: bool,
        shared_kv: bool,
        attention: str,
        ffn_expansion: int,
        ffn_activation: str,
        attention_implementation: str = "batched",
        ffn_inner_dim: int | None = None,
        kept_heads: int | None = None,
    ):
        super().__init__()
        if kept_heads is not None and not 1 <= kept_heads <= heads:
            raise ValueError(f"a transformer block with {heads} heads can keep 1..{heads} of them, not {kept_heads}")
        # head pruning (kept_heads, set by md_export.prune) keeps each head's width, drops whole heads
        attention_kwargs = dict(kind=attention, implementation=attention_implementation, head_dim=dim // heads)
        self.has_self_attention = self_attention
        if self_attention:
            self.norm1 = nn.LayerNorm(dim)
            self.attn1 = Attention(dim, dim, kept_heads or heads, shared_kv, **attention_kwargs)
        self.norm2 = nn.LayerNorm(dim)
        self.attn2 = Attention(dim, context_dim, kept_heads or heads, shared_kv, **attention_kwargs)
        self.norm3 = nn.LayerNorm(dim)
        self.ff = GatedFeedForward(dim, ffn_expansion, ffn_activation, ffn_inner_dim)

    def forward(self, x: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        if self.has_self_attention:
            x = x + self.attn1(self.norm1(x))
        x = x + self.attn2(self.norm2(x), context)
        return x + self.ff(self.norm3(x))


class SpatialTransformer(nn.Module):
    def __init__(self, channels: int, depth: int, norm_groups: int, ffn_inner_dims: list[int | None] | None = None,
                 kept_heads: list[int | None] | None = None, **block_kwargs):
        super().__init__()
        ffn_inner_dims = ffn_inner_dims or [None] * depth
        kept_heads = kept_heads or [None] * depth
        self.norm = nn.GroupNorm(norm_groups, channels, eps=1e-6)
        self.proj_in = nn.Conv2d(channels, channels, 1)
        self.transformer_blocks = nn.ModuleList(
            [BasicTransformerBlock(channels, ffn_inner_dim=inner, kept_heads=heads, **block_kwargs)
             for inner, heads in zip(ffn_inner_dims, kept_heads)]
        )
        self.proj_out = nn.Conv2d(channels, channels, 1)

    def forward(self, x: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        batch, channels, height, width = x.shape
        h = self.proj_in(self.norm(x))
        tokens = h.reshape(batch, channels, height * width).transpose(1, 2)
        for block in self.transformer_blocks:
            tokens = block(tokens, context)
        h = tokens.transpose(1, 2).reshape(batch, channels, height, width)
        return x + self.proj_out(h)


class SkippedTransformer(nn.Module):
    """A transformer removed by pruning (every block of its stack): passes the features through."""

    def forward(self, x: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        return x
