"""Export-friendly CLIP text transformer, weight-compatible with `transformers.CLIPTextModel`.

    input_ids (B,77) int64 ─token_embedding─┐
                     position_embedding[:77]─┴─+─> [pre-LN causal self-attention, pre-LN MLP] x N
                                                 ─final_layer_norm─> text_emb (B,77,D)

Why our own: `CLIPTextModel` fails through torch.export ("Unsupported fx node alias") and carries
mask-building code paths the exporters trip on. Here the causal mask is a constant buffer and the
attention is plain matmuls, with parameter names identical to CLIPTextModel's `text_model.*`.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

ACTIVATIONS = ("quick_gelu", "gelu")


@dataclass(frozen=True)
class TextEncoderConfig:
    vocab_size: int = 49408  # CLIP BPE vocabulary (49152 merges + 256 bytes... + 2 specials)
    max_position_embeddings: int = 77  # context length; prompts are padded/truncated to it
    hidden_size: int = 768  # width; also the UNet's cross_attention_dim
    num_hidden_layers: int = 12  # transformer layers
    num_attention_heads: int = 12  # heads per layer
    intermediate_size: int = 3072  # MLP width
    hidden_act: str = "quick_gelu"  # ViT-L/14 uses quick_gelu: x * sigmoid(1.702 x)
    layer_norm_eps: float = 1e-5  # LayerNorm epsilon

    def __post_init__(self) -> None:
        if self.hidden_act not in ACTIVATIONS:
            raise ValueError(f"TextEncoderConfig.hidden_act {self.hidden_act!r} not in {ACTIVATIONS}")
        if self.hidden_size % self.num_attention_heads:
            raise ValueError("TextEncoderConfig.hidden_size must be divisible by num_attention_heads")

    def replace(self, **changes) -> "TextEncoderConfig":
        return dataclasses.replace(self, **changes)

    @classmethod
    def from_hf_dict(cls, hf: dict) -> "TextEncoderConfig":
        """Read a transformers CLIPTextConfig (config.json of a CLIPTextModel directory)."""
        if "text_config" in hf:  # a full CLIPModel config
            hf = hf["text_config"]
        fields = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in hf.items() if k in fields})


class CLIPEmbeddings(nn.Module):
    def __init__(self, config: TextEncoderConfig):
        super().__init__()
        self.token_embedding = nn.Embedding(config.vocab_size, config.hidden_size)
        self.position_embedding = nn.Embedding(config.max_position_embeddings, config.hidden_size)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        positions = self.position_embedding.weight
        if input_ids.shape[1] != positions.shape[0]:  # static shape check; a full-length slice would
            positions = positions[: input_ids.shape[1]]  # become an `alias` node coremltools rejects
        return self.token_embedding(input_ids) + positions[None]


class CLIPAttention(nn.Module):
    def __init__(self, config: TextEncoderConfig):
        super().__init__()
        self.heads = config.num_attention_heads
        self.head_dim = config.hidden_size // self.heads
        self.scale = 1.0 / math.sqrt(self.head_dim)
        dim = config.hidden_size
        self.q_proj = nn.Linear(dim, dim)
        self.k_proj = nn.Linear(dim, dim)
        self.v_proj = nn.Linear(dim, dim)
        self.out_proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        batch, tokens, dim = x.shape

        def heads(t: torch.Tensor) -> torch.Tensor:
            return t.reshape(batch, tokens, self.heads, self.head_dim).transpose(1, 2)

        q, k, v = heads(self.q_proj(x)), heads(self.k_proj(x)), heads(self.v_proj(x))
        scores = torch.matmul(q, k.transpose(-1, -2)) * self.scale + mask
        out = torch.matmul(scores.softmax(dim=-1), v)
        return self.out_proj(out.transpose(1, 2).reshape(batch, tokens, dim))


class CLIPMLP(nn.Module):
    def __init__(self, config: TextEncoderConfig):
        super().__init__()
        self.quick_gelu = config.hidden_act == "quick_gelu"
        self.fc1 = nn.Linear(config.hidden_size, config.intermediate_size)
        self.fc2 = nn.Linear(config.intermediate_size, config.hidden_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.fc1(x)
        h = h * torch.sigmoid(1.702 * h) if self.quick_gelu else F.gelu(h)
        return self.fc2(h)


class CLIPEncoderLayer(nn.Module):
    def __init__(self, config: TextEncoderConfig):
        super().__init__()
        self.layer_norm1 = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.self_attn = CLIPAttention(config)
        self.layer_norm2 = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.mlp = CLIPMLP(config)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        x = x + self.self_attn(self.layer_norm1(x), mask)
        return x + self.mlp(self.layer_norm2(x))


class CLIPEncoder(nn.Module):
    def __init__(self, config: TextEncoderConfig):
        super().__init__()
        self.layers = nn.ModuleList([CLIPEncoderLayer(config) for _ in range(config.num_hidden_layers)])

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = layer(x, mask)
        return x


class CLIPTextEncoder(nn.Module):
    input_names = ("input_ids",)
    output_names = ("text_emb",)

    def __init__(self, config: TextEncoderConfig):
        super().__init__()
        self.config = config
        self.embeddings = CLIPEmbeddings(config)
        self.encoder = CLIPEncoder(config)
        self.final_layer_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        length = config.max_position_embeddings
        # -1e4, not finfo.min: representable in fp16 (finfo.min becomes -inf, which breaks weight
        # palettization and fp16 graphs); exp(-1e4) is 0 in fp32, so outputs match CLIPTextModel.
        causal = torch.full((length, length), -1e4).triu(1)
        self.register_buffer("causal_mask", causal, persistent=False)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        x = self.embeddings(input_ids)
        length = input_ids.shape[1]
        mask = self.causal_mask if length == self.causal_mask.shape[0] else self.causal_mask[:length, :length]
        return self.final_layer_norm(self.encoder(x, mask))


def build_text_encoder(config: TextEncoderConfig) -> CLIPTextEncoder:
    return CLIPTextEncoder(config)
