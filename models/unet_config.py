"""Configuration of the mobile UNet: every MobileDiffusion optimization is one field here.

The same dataclass describes SD-1.5's UNet (four levels, transformers everywhere, GELU, softmax,
FFN x8, full convs, 22 residual blocks) and MobileDiffusion's (three levels, a deep transformer
stack at the 16x16 bottleneck, cross-attention only elsewhere, shared K/V, Swish, ReLU attention,
FFN x6, separable convs, 12 residual blocks), so an ablation is a sequence of `dataclasses.replace`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

PREDICTION_TYPES = ("epsilon", "v_prediction", "sample")
ACTIVATIONS = ("gelu", "silu")
ATTENTION_KINDS = ("softmax", "relu")
ATTENTION_IMPLEMENTATIONS = ("batched", "split_einsum")


@dataclass(frozen=True)
class UNetConfig:
    in_channels: int = 4  # latent channels coming in (the VAE's latent channels)
    out_channels: int = 4  # channels predicted (same space as the input latent)
    block_out_channels: tuple[int, ...] = (320, 640, 1280, 1280)  # width per resolution level
    down_layers_per_level: tuple[int, ...] = (2, 2, 2, 2)  # residual blocks per down level;
    # each up level gets one more, to consume the skip of the level's downsampler / conv_in
    mid_resnets: int = 2  # residual blocks in the bottleneck (2: resnet-attn-resnet, 1: resnet-attn,
    # 0: no bottleneck at all, as BK-SDM-Small's UNet (then mid_transformer_depth must be 0)
    transformer_depth: tuple[int, ...] = (1, 1, 1, 0)  # transformer blocks after each resnet, per level (0 = none)
    self_attention: tuple[bool, ...] = (True, True, True, True)  # False = cross-attention-only blocks at that level
    mid_transformer_depth: int = 1  # transformer blocks stacked at the bottleneck (always self + cross)
    num_attention_heads: tuple[int, ...] = (8, 8, 8, 8)  # heads per level (bottleneck uses the last)
    cross_attention_dim: int = 768  # width of the text embedding
    shared_kv: bool = False  # one projection serves as key and value (paper: -5% params)
    ffn_activation: str = "gelu"  # gate activation of the gated FFN: gelu (GEGLU) or silu (Swish)
    attention: str = "softmax"  # softmax or relu (ReLU(QK^T)/L, paper: FID 12.50 -> 12.31)
    ffn_expansion: int = 8  # gated FFN projects dim -> expansion*dim, half of it is the gate
    attention_implementation: str = "batched"  # batched matmuls, or split_einsum (per-head einsums, Apple Neural Engine friendly)
    separable_conv: bool = False  # depthwise 3x3 + pointwise in residual blocks below the top level
    norm_groups: int = 32  # GroupNorm groups
    norm_eps: float = 1e-5  # GroupNorm epsilon in residual blocks
    time_embed_dim: int = 1280  # width of the timestep embedding MLP
    prediction_type: str = "epsilon"  # what the network predicts: epsilon, v_prediction or sample (x0)
    # Pruned structures (md_export.prune). Empty = the regular structure the fields above describe.
    # "Build order" is the order MobileUNet creates things: down levels, bottleneck, up levels.
    resnet_inner_channels: tuple[int, ...] = ()  # per residual block (build order): conv1 out width
    skipped_resnets: tuple[int, ...] = ()  # residual blocks (build order) removed, i.e. identity (in == out only)
    transformer_depths: tuple[int, ...] = ()  # per transformer slot (build order: one per resnet of a level
    # with transformers, then the bottleneck): blocks kept; 0 removes the slot's whole transformer
    ffn_inner_dims: tuple[int, ...] = ()  # per transformer block (build order, after transformer_depths)
    attention_heads: tuple[int, ...] = ()  # per transformer block (same order): heads kept in each of its
    # attentions (each head keeps its width, so attention stays multi-head with whole heads)

    def __post_init__(self) -> None:
        levels = len(self.block_out_channels)
        for name in ("down_layers_per_level", "transformer_depth", "self_attention", "num_attention_heads"):
            if len(getattr(self, name)) != levels:
                raise ValueError(
                    f"UNetConfig.{name} has {len(getattr(self, name))} entries, block_out_channels has {levels}"
                )
        if self.prediction_type not in PREDICTION_TYPES:
            raise ValueError(f"UNetConfig.prediction_type {self.prediction_type!r} not in {PREDICTION_TYPES}")
        if self.ffn_activation not in ACTIVATIONS:
            raise ValueError(f"UNetConfig.ffn_activation {self.ffn_activation!r} not in {ACTIVATIONS}")
        if self.attention not in ATTENTION_KINDS:
            raise ValueError(f"UNetConfig.attention {self.attention!r} not in {ATTENTION_KINDS}")
        if self.attention_implementation not in ATTENTION_IMPLEMENTATIONS:
            raise ValueError(f"UNetConfig.attention_implementation {self.attention_implementation!r} "
                             f"not in {ATTENTION_IMPLEMENTATIONS}")
        if self.ffn_expansion % 2:
            raise ValueError("UNetConfig.ffn_expansion must be even (half of the projection is the gate)")
        if self.mid_resnets not in (0, 1, 2):
            raise ValueError("UNetConfig.mid_resnets must be 0, 1 or 2")
        if self.mid_resnets == 0 and self.mid_transformer_depth:
            raise ValueError("UNetConfig.mid_transformer_depth must be 0 without bottleneck resnets "
                             "(mid_resnets=0): the bottleneck transformer sits between them")
        for name in ("resnet_inner_channels", "skipped_resnets", "transformer_depths", "ffn_inner_dims",
                     "attention_heads"):
            value = getattr(self, name)
            if any(not isinstance(v, int) or v < 0 for v in value):
                raise ValueError(f"UNetConfig.{name} must hold non-negative integers, got {value}")
        if any(v < 1 for v in self.resnet_inner_channels + self.ffn_inner_dims + self.attention_heads):
            raise ValueError("UNetConfig.resnet_inner_channels / ffn_inner_dims / attention_heads entries "
                             "must be positive")
        for width, heads in zip(self.block_out_channels, self.num_attention_heads):
            if width % heads or width % self.norm_groups:
                raise ValueError(f"width {width} not divisible by heads {heads} and norm groups {self.norm_groups}")

    @property
    def levels(self) -> int:
        return len(self.block_out_channels)

    @property
    def downsample_factor(self) -> int:
        return 2 ** (self.levels - 1)

    @property
    def residual_blocks(self) -> int:
        """Residual blocks in the whole UNet (SD-1.5: 8 down + 2 mid + 12 up = 22)."""
        downs = sum(self.down_layers_per_level)
        return downs + self.mid_resnets + downs + self.levels - len(set(self.skipped_resnets))

    @property
    def is_pruned(self) -> bool:
        return bool(self.resnet_inner_channels or self.skipped_resnets or self.transformer_depths
                    or self.ffn_inner_dims or self.attention_heads)

    def resnet_slots(self) -> int:
        """Residual blocks built (removed ones included), i.e. entries of resnet_inner_channels."""
        downs = sum(self.down_layers_per_level)
        return downs + self.mid_resnets + downs + self.levels

    def default_transformer_depths(self) -> tuple[int, ...]:
        """Per transformer slot in build order, before any pruning."""
        downs = [self.transformer_depth[level] for level in range(self.levels)
                 for _ in range(self.down_layers_per_level[level]) if self.transformer_depth[level]]
        ups = [self.transformer_depth[level] for level in reversed(range(self.levels))
               for _ in range(self.down_layers_per_level[level] + 1) if self.transformer_depth[level]]
        mid = [self.mid_transformer_depth] if self.mid_transformer_depth else []
        return tuple(downs + mid + ups)

    def replace(self, **changes) -> "UNetConfig":
        return dataclasses.replace(self, **changes)
