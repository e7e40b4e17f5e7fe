"""diffusers `UNet2DConditionModel` and `AutoencoderKL` (config.json + weights) onto our modules.

Our modules keep diffusers' names except where they are flatter:
    diffusers                                      ours
    mid_block.resnets.{j}.*                        mid_resnets.{j}.*
    mid_block.attentions.0.*                       mid_attention.*
    {down,up}_blocks.{i}.{down,up}samplers.0.*     {down,up}_blocks.{i}.resampler.*
    ...transformer_blocks.{k}.ff.net.0.proj.*      ...transformer_blocks.{k}.ff.proj.*
    ...transformer_blocks.{k}.ff.net.2.*           ...transformer_blocks.{k}.ff.out.*
    post_quant_conv.*  (AutoencoderKL)             decoder.post_quant_conv.*  (VAEDecoder)
    quant_conv.*       (AutoencoderKL)             encoder.quant_conv.*       (VAEEncoder)
Values pass unchanged except two reshapes of the same matrix: `use_linear_projection` UNets
(SD-2.x) keep proj_in / proj_out as Linear (C, C) where ours are 1x1 convs (C, C, 1, 1), and
pre-0.14 diffusers VAEs name their mid attention query / key / value / proj_attn.

The configs are read field by field: anything our modules do not model (class or added
embeddings, LCM's guidance embedding, only-cross-attention blocks, ...) is an
`UnsupportedConfigError` naming each field, never a silently different network.
"""

from __future__ import annotations

import re

import torch

from .checkpoint import CheckpointError, UnsupportedConfigError
from .unet_config import UNetConfig
from .vae_config import AutoencoderConfig, VAEConfig

UNET_WEIGHT_STEMS = ("diffusion_pytorch_model",)
VAE_WEIGHT_STEMS = ("diffusion_pytorch_model",)

_RESNET = r"(norm1|norm2|conv1|conv2|time_emb_proj|conv_shortcut)\.(weight|bias)"
# Inside a Transformer2DModel; CompVis' SpatialTransformer uses the same names.
TRANSFORMER_INNER = (r"((norm|proj_in|proj_out)\.(weight|bias)"
                     r"|transformer_blocks\.\d+\.(norm[123]|attn[12]\.(to_q|to_k|to_v|to_out\.0)"
                     r"|ff\.net\.0\.proj|ff\.net\.2)\.(weight|bias))")
_UNET_RULES = [
    (re.compile(r"(conv_in|conv_norm_out|conv_out|time_embedding\.linear_[12])\.(weight|bias)"), r"\g<0>"),
    (re.compile(r"(down|up)_blocks\.(\d+)\.\1samplers\.0\.conv\.(weight|bias)"), r"\1_blocks.\2.resampler.conv.\3"),
    (re.compile(rf"(down|up)_blocks\.(\d+)\.resnets\.(\d+)\.{_RESNET}"), r"\g<0>"),
    (re.compile(rf"mid_block\.resnets\.(\d+)\.({_RESNET})"), r"mid_resnets.\1.\2"),
    (re.compile(rf"(down|up)_blocks\.(\d+)\.attentions\.(\d+)\.{TRANSFORMER_INNER}"), r"\g<0>"),
    (re.compile(rf"mid_block\.attentions\.0\.({TRANSFORMER_INNER})"), r"mid_attention.\1"),
]


def transformer_inner_name(key: str) -> str:
    """diffusers' FeedForward is a Sequential (net.0 = GEGLU, net.1 = dropout, net.2 = Linear);
    ours names its two projections."""
    return key.replace(".ff.net.0.proj.", ".ff.proj.").replace(".ff.net.2.", ".ff.out.")


def as_conv1x1(key: str, value: torch.Tensor) -> torch.Tensor:
    """A Linear proj_in / proj_out (use_linear_projection) as the 1x1 conv ours is: same matrix."""
    if key.endswith((".proj_in.weight", ".proj_out.weight")) and value.ndim == 2:
        return value[:, :, None, None]
    return value


def _map(rules, key: str) -> str | None:
    for pattern, replacement in rules:
        if pattern.fullmatch(key):
            return pattern.sub(replacement, key)
    return None


def unet_state_dict_from_diffusers(state: dict[str, torch.Tensor], source: str = "unet") -> dict[str, torch.Tensor]:
    """A UNet2DConditionModel state dict on MobileUNet's names; unmapped keys are one CheckpointError."""
    out, unmapped = {}, []
    for key, value in state.items():
        name = _map(_UNET_RULES, key)
        if name is None:
            unmapped.append(key)
            continue
        name = transformer_inner_name(name)
        out[name] = as_conv1x1(name, value)
    if unmapped:
        raise CheckpointError(source, unmapped=unmapped)
    return out


_VAE_RESNET = r"(norm1|norm2|conv1|conv2|conv_shortcut)\.(weight|bias)"
_VAE_ATTENTION = r"(group_norm|to_q|to_k|to_v|to_out\.0|query|key|value|proj_attn)\.(weight|bias)"
_VAE_RULES = [
    (re.compile(r"(quant_conv)\.(weight|bias)"), r"encoder.\g<0>"),
    (re.compile(r"(post_quant_conv)\.(weight|bias)"), r"decoder.\g<0>"),
    # our own VAEDecoder / VAEEncoder files: the same names under their side
    (re.compile(r"(encoder\.quant_conv|decoder\.post_quant_conv)\.(weight|bias)"), r"\g<0>"),
    (re.compile(r"(encoder|decoder)\.(conv_in|conv_out|conv_norm_out)\.(weight|bias)"), r"\g<0>"),
    (re.compile(rf"(encoder|decoder)\.(down|up)_blocks\.\d+\.resnets\.\d+\.{_VAE_RESNET}"), r"\g<0>"),
    (re.compile(r"encoder\.down_blocks\.\d+\.downsamplers\.0\.conv\.(weight|bias)"), r"\g<0>"),
    (re.compile(r"decoder\.up_blocks\.\d+\.upsamplers\.0\.conv\.(weight|bias)"), r"\g<0>"),
    (re.compile(rf"(encoder|decoder)\.mid_block\.resnets\.[01]\.{_VAE_RESNET}"), r"\g<0>"),
    (re.compile(rf"(encoder|decoder)\.mid_block\.attentions\.0\.{_VAE_ATTENTION}"), r"\g<0>"),
]
# diffusers < 0.14 AttentionBlock names (still in many SD-1.x vae/ folders)
_LEGACY_ATTENTION = {".query.": ".to_q.", ".key.": ".to_k.", ".value.": ".to_v.", ".proj_attn.": ".to_out.0."}


def vae_attention_value(name: str, value: torch.Tensor) -> torch.Tensor:
    """The mid attention's projections as Linear weights: CompVis stores them as 1x1 convs."""
    if ".attentions.0.to_" in name and name.endswith(".weight") and value.ndim == 4:
        return value[:, :, 0, 0]
    return value


def vae_state_dict_from_diffusers(state: dict[str, torch.Tensor], side: str,
                                  source: str = "vae") -> dict[str, torch.Tensor]:
    """One side ("decoder" or "encoder") of an AutoencoderKL state dict on VAEDecoder / VAEEncoder names."""
    if side not in ("decoder", "encoder"):
        raise ValueError(f"side must be decoder or encoder, not {side!r}")
    out, unmapped = {}, []
    for key, value in state.items():
        name = _map(_VAE_RULES, key)
        if name is None:
            unmapped.append(key)
        elif name.startswith(side + "."):
            for old, new in _LEGACY_ATTENTION.items():
                name = name.replace(old, new)
            out[name] = vae_attention_value(name, value)
    if unmapped:
        raise CheckpointError(source, unmapped=unmapped)
    return out


# ---- configs ------------------------------------------------------------------------------

# field: (diffusers default, accepted values, what ours does instead)
_UNET_FIXED = {
    "center_input_sample": (False, (False,), "ours feeds the latent unscaled"),
    "flip_sin_to_cos": (True, (True,), "our timestep features are cos-first"),
    "freq_shift": (0, (0,), "our timestep frequencies have no shift"),
    "time_embedding_type": ("positional", ("positional",), "ours is the sinusoidal embedding"),
    "time_embedding_act_fn": (None, (None,), "no activation after our timestep MLP"),
    "timestep_post_act": (None, (None,), "no activation after our timestep MLP"),
    "time_cond_proj_dim": (None, (None,), "a guidance-scale embedding (LCM) is not modelled"),
    "class_embed_type": (None, (None,), "class embeddings are not modelled"),
    "num_class_embeds": (None, (None,), "class embeddings are not modelled"),
    "class_embeddings_concat": (False, (False,), "class embeddings are not modelled"),
    "addition_embed_type": (None, (None,), "added (SDXL-style) conditioning is not modelled"),
    "encoder_hid_dim": (None, (None,), "a text-embedding projection is not modelled"),
    "encoder_hid_dim_type": (None, (None,), "a text-embedding projection is not modelled"),
    "dual_cross_attention": (False, (False,), "one cross-attention per block"),
    "mid_block_only_cross_attention": (None, (None, False), "our bottleneck blocks have self-attention"),
    "cross_attention_norm": (None, (None,), "the text embedding is not normalised in attention"),
    "attention_type": ("default", ("default",), "no gated (GLIGEN) attention"),
    "resnet_time_scale_shift": ("default", ("default",), "our resnets add the timestep embedding"),
    "resnet_skip_time_act": (False, (False,), "our resnets apply SiLU to the timestep embedding"),
    "resnet_out_scale_factor": (1.0, (1.0,), "our resnets do not rescale their output"),
    "mid_block_scale_factor": (1, (1,), "our bottleneck does not rescale"),
    "downsample_padding": (1, (1,), "our downsamplers pad by 1"),
    "conv_in_kernel": (3, (3,), "our conv_in is 3x3"),
    "conv_out_kernel": (3, (3,), "our conv_out is 3x3"),
    "act_fn": ("silu", ("silu",), "our resnets use SiLU"),
    "reverse_transformer_layers_per_block": (None, (None,), "up levels mirror the down levels' depth"),
}
_DOWN_TYPES = {"CrossAttnDownBlock2D": True, "DownBlock2D": False}
_UP_TYPES = {"CrossAttnUpBlock2D": True, "UpBlock2D": False}
_MID_TYPES = ("UNetMidBlock2DCrossAttn", None)


def _per_level(value, levels: int) -> tuple:
    return tuple(value) if isinstance(value, (list, tuple)) else (value,) * levels


def _check_fixed(config: dict, fixed: dict) -> list[str]:
    problems = []
    for field, (default, accepted, why) in fixed.items():
        value = config.get(field, default)
        if isinstance(value, list):
            value = tuple(value)
        if value not in accepted:
            problems.append(f"{field}={value!r} ({why})")
    return problems


def unet_config_from_diffusers(config: dict, prediction_type: str = "epsilon",
                               source: str = "unet/config.json") -> UNetConfig:
    """A UNet2DConditionModel config.json as a UNetConfig (prediction_type comes from the scheduler)."""
    problems = []
    if config.get("_class_name", "UNet2DConditionModel") != "UNet2DConditionModel":
        problems.append(f"_class_name={config['_class_name']!r} (only UNet2DConditionModel maps onto our UNet)")
    problems += _check_fixed(config, _UNET_FIXED)
    widths = tuple(config.get("block_out_channels", (320, 640, 1280, 1280)))
    levels = len(widths)
    down_types = tuple(config.get("down_block_types", ("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",)))
    up_types = tuple(config.get("up_block_types", ("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3))
    unknown = [t for t in down_types if t not in _DOWN_TYPES] + [t for t in up_types if t not in _UP_TYPES]
    if unknown:
        problems.append(f"block types {', '.join(unknown)} (ours: {', '.join(list(_DOWN_TYPES) + list(_UP_TYPES))})")
    elif len(down_types) != levels or len(up_types) != levels:
        problems.append(f"{len(down_types)} down / {len(up_types)} up block types for {levels} block_out_channels")
    elif [_DOWN_TYPES[t] for t in down_types] != [_UP_TYPES[t] for t in reversed(up_types)]:
        problems.append(f"up_block_types {up_types} do not mirror down_block_types {down_types} "
                        "(our up levels have transformers exactly where the down levels do)")
    mid_type = config.get("mid_block_type", "UNetMidBlock2DCrossAttn")
    if mid_type not in _MID_TYPES:
        problems.append(f"mid_block_type={mid_type!r} (ours: UNetMidBlock2DCrossAttn or none)")
    only_cross = config.get("only_cross_attention", False)
    if any(only_cross) if isinstance(only_cross, (list, tuple)) else only_cross:
        problems.append("only_cross_attention (diffusers' attn1 then attends to the text; ours drops attn1 instead)")
    if config.get("norm_num_groups", 32) is None:
        problems.append("norm_num_groups=None (our UNet always normalises before conv_out)")
    cross_dims = set(_per_level(config.get("cross_attention_dim", 1280), levels))
    if len(cross_dims) != 1:
        problems.append(f"cross_attention_dim per level {sorted(cross_dims)} (ours: one text width)")
    depths = _per_level(config.get("transformer_layers_per_block", 1), levels)
    if any(not isinstance(d, int) for d in depths):
        problems.append("transformer_layers_per_block per resnet (ours: one depth per level)")
    if problems:
        raise UnsupportedConfigError(source, problems)

    # diffusers' `attention_head_dim` holds the number of heads for SD-style UNets (a historical
    # misnomer diffusers keeps for compatibility); `num_attention_heads`, when set, wins.
    heads = _per_level(config.get("num_attention_heads") or config.get("attention_head_dim", 8), levels)
    has_transformer = [_DOWN_TYPES[t] for t in down_types]
    try:
        return UNetConfig(
            in_channels=config.get("in_channels", 4),
            out_channels=config.get("out_channels", 4),
            block_out_channels=widths,
            down_layers_per_level=_per_level(config.get("layers_per_block", 2), levels),
            mid_resnets=2 if mid_type else 0,
            transformer_depth=tuple(d if cross else 0 for d, cross in zip(depths, has_transformer)),
            self_attention=(True,) * levels,
            mid_transformer_depth=depths[-1] if mid_type else 0,
            num_attention_heads=heads,
            cross_attention_dim=cross_dims.pop(),
            ffn_activation="gelu", attention="softmax", ffn_expansion=8,  # GEGLU x4, softmax: fixed in diffusers
            norm_groups=config.get("norm_num_groups", 32),
            norm_eps=config.get("norm_eps", 1e-5),
            time_embed_dim=config.get("time_embedding_dim") or 4 * widths[0],
            prediction_type=prediction_type,
        )
    except ValueError as exc:
        raise UnsupportedConfigError(source, [str(exc)]) from None


_VAE_FIXED = {
    "in_channels": (3, (3,), "our VAE encodes RGB"),
    "out_channels": (3, (3,), "our VAE decodes RGB"),
    "act_fn": ("silu", ("silu",), "our VAE uses SiLU"),
    "shift_factor": (None, (None,), "a latent shift (SD3 / Flux VAEs) is not modelled"),
    "latents_mean": (None, (None,), "per-channel latent statistics are not modelled"),
    "latents_std": (None, (None,), "per-channel latent statistics are not modelled"),
}


def vae_config_from_diffusers(config: dict, source: str = "vae/config.json") -> VAEConfig:
    """An AutoencoderKL config.json as a VAEConfig: its decoder and encoder sides."""
    problems = []
    if config.get("_class_name", "AutoencoderKL") != "AutoencoderKL":
        problems.append(f"_class_name={config['_class_name']!r} (only AutoencoderKL maps onto our KL VAE)")
    problems += _check_fixed(config, _VAE_FIXED)
    widths = tuple(config.get("block_out_channels", (64,)))
    for field, kind in (("down_block_types", "DownEncoderBlock2D"), ("up_block_types", "UpDecoderBlock2D")):
        types = tuple(config.get(field, (kind,)))
        if set(types) != {kind} or len(types) != len(widths):
            problems.append(f"{field}={types} (ours: {kind} per block_out_channels entry)")
    if problems:
        raise UnsupportedConfigError(source, problems)
    try:
        side = AutoencoderConfig(
            family="kl",
            latent_channels=config.get("latent_channels", 4),
            block_out_channels=widths,
            layers_per_block=config.get("layers_per_block", 1),
            mid_attention=config.get("mid_block_add_attention", True),
            norm_groups=config.get("norm_num_groups", 32),
        )
        return VAEConfig(decoder=side.replace(quant_conv=config.get("use_post_quant_conv", True)),
                         encoder=side.replace(quant_conv=config.get("use_quant_conv", True)),
                         scaling_factor=config.get("scaling_factor", 0.18215))
    except ValueError as exc:
        raise UnsupportedConfigError(source, [str(exc)]) from None
