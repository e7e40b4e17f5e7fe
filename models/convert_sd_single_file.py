"""Single-file Stable Diffusion 1.x checkpoints (the original CompVis layout) onto our modules.

One .safetensors holds every network under its LatentDiffusion attribute:
    model.diffusion_model.*                   the UNet (input_blocks / middle_block / output_blocks)
    first_stage_model.{encoder,decoder}.*     the VAE (down / mid / up, block / attn_1)
    first_stage_model.{quant_conv,post_quant_conv}.*
    cond_stage_model.transformer[.text_model].*  the CLIP text encoder, transformers' names
plus sampler buffers (betas, alphas_cumprod, ...) and EMA copies (model_ema.*), which no network
uses. The UNet's blocks are numbered sequentially, so the mapping is generated from the
preset's UNetConfig: a file whose blocks differ from the preset ends in unmapped / missing keys.
SD-2.x files carry an OpenCLIP text encoder (cond_stage_model.model.*), not this layout.
"""

from __future__ import annotations

import re

import torch

from .checkpoint import CheckpointError
from .convert_diffusers import TRANSFORMER_INNER, transformer_inner_name, vae_attention_value
from .convert_transformers import text_encoder_state_dict_from_hf
from .unet_config import UNetConfig
from .vae_config import AutoencoderConfig

UNET_PREFIX = "model.diffusion_model."
VAE_PREFIX = "first_stage_model."
TEXT_PREFIX = "cond_stage_model.transformer."
OPENCLIP_PREFIX = "cond_stage_model.model."
COMPONENT_PREFIXES = {
    "unet": (UNET_PREFIX,),
    "vae_decoder": (VAE_PREFIX + "decoder.", VAE_PREFIX + "post_quant_conv."),
    "vae_encoder": (VAE_PREFIX + "encoder.", VAE_PREFIX + "quant_conv."),
    "text_encoder": ("cond_stage_model.",),
}
# LatentDiffusion buffers and training leftovers that are no network's weights.
_NOT_WEIGHTS = re.compile(
    r"(betas|alphas_cumprod(_prev)?|sqrt_(one_minus_)?alphas_cumprod|log_one_minus_alphas_cumprod"
    r"|sqrt_recip(m1)?_alphas_cumprod|posterior_(variance|log_variance_clipped|mean_coef[12])|logvar"
    r"|model_ema\..*|first_stage_model\.loss\..*"
    r"|cond_stage_model\.transformer\.(text_model\.)?embeddings\.position_ids)"
)


def is_sd_single_file(keys) -> bool:
    return any(key.startswith(UNET_PREFIX) for key in keys)


def ignored_keys(keys) -> list[str]:
    """The keys of a single file that belong to no network (kept out of every component)."""
    return [key for key in keys if _NOT_WEIGHTS.fullmatch(key)]


def unknown_keys(keys) -> list[str]:
    """Keys that are neither a known component's nor a known non-weight: named, never dropped."""
    prefixes = tuple(p for group in COMPONENT_PREFIXES.values() for p in group) + (VAE_PREFIX,)
    return [key for key in keys if not key.startswith(prefixes) and not _NOT_WEIGHTS.fullmatch(key)]


# ---- UNet ---------------------------------------------------------------------------------

_RESNET_NAMES = {"in_layers.0": "norm1", "in_layers.2": "conv1", "emb_layers.1": "time_emb_proj",
                 "out_layers.0": "norm2", "out_layers.3": "conv2", "skip_connection": "conv_shortcut"}
_RESNET = re.compile(r"(in_layers\.[02]|emb_layers\.1|out_layers\.[03]|skip_connection)\.(weight|bias)")
_TRANSFORMER = re.compile(TRANSFORMER_INNER)


def unet_block_map(config: UNetConfig) -> dict[str, tuple[str, str]]:
    """CompVis block prefix -> (our prefix, kind) for every block of this config, in CompVis order."""
    blocks = {"input_blocks.0.0.": ("conv_in.", "leaf")}
    index = 1
    for level in range(config.levels):
        for j in range(config.down_layers_per_level[level]):
            blocks[f"input_blocks.{index}.0."] = (f"down_blocks.{level}.resnets.{j}.", "resnet")
            if config.transformer_depth[level]:
                blocks[f"input_blocks.{index}.1."] = (f"down_blocks.{level}.attentions.{j}.", "transformer")
            index += 1
        if level < config.levels - 1:
            blocks[f"input_blocks.{index}.0.op."] = (f"down_blocks.{level}.resampler.conv.", "leaf")
            index += 1
    # middle_block is one sequence: resnet, [transformer], [resnet]
    middle = [("mid_resnets.0.", "resnet")] if config.mid_resnets else []
    if config.mid_transformer_depth:
        middle.append(("mid_attention.", "transformer"))
    middle += [(f"mid_resnets.{j}.", "resnet") for j in range(1, config.mid_resnets)]
    blocks.update({f"middle_block.{i}.": entry for i, entry in enumerate(middle)})
    index = 0
    for up, level in enumerate(reversed(range(config.levels))):
        for j in range(config.down_layers_per_level[level] + 1):
            blocks[f"output_blocks.{index}.0."] = (f"up_blocks.{up}.resnets.{j}.", "resnet")
            position = 1
            if config.transformer_depth[level]:
                blocks[f"output_blocks.{index}.1."] = (f"up_blocks.{up}.attentions.{j}.", "transformer")
                position = 2
            if level > 0 and j == config.down_layers_per_level[level]:
                blocks[f"output_blocks.{index}.{position}.conv."] = (f"up_blocks.{up}.resampler.conv.", "leaf")
            index += 1
    blocks.update({"time_embed.0.": ("time_embedding.linear_1.", "leaf"),
                   "time_embed.2.": ("time_embedding.linear_2.", "leaf"),
                   "out.0.": ("conv_norm_out.", "leaf"), "out.2.": ("conv_out.", "leaf")})
    return blocks


def _inner(kind: str, rest: str) -> str | None:
    if kind == "leaf":
        return rest if rest in ("weight", "bias") else None
    if kind == "resnet":
        match = _RESNET.fullmatch(rest)
        return f"{_RESNET_NAMES[match.group(1)]}.{match.group(2)}" if match else None
    return transformer_inner_name("." + rest)[1:] if _TRANSFORMER.fullmatch(rest) else None


def unet_state_dict_from_sd(state: dict[str, torch.Tensor], config: UNetConfig,
                            source: str = "checkpoint") -> dict[str, torch.Tensor]:
    """The `model.diffusion_model.*` keys of a single file on MobileUNet's names for `config`."""
    blocks = unet_block_map(config)
    # longest prefix first: a block's prefix must never claim a deeper one's keys
    ordered = sorted(blocks, key=len, reverse=True)
    out, unmapped = {}, []
    for key, value in state.items():
        if not key.startswith(UNET_PREFIX):
            continue
        name = key[len(UNET_PREFIX):]
        block = next((b for b in ordered if name.startswith(b)), None)
        inner = _inner(blocks[block][1], name[len(block):]) if block else None
        if inner is None:
            unmapped.append(key)
            continue
        ours = blocks[block][0] + inner
        if ours.endswith((".proj_in.weight", ".proj_out.weight")) and value.ndim == 2:
            value = value[:, :, None, None]  # SD-2-style linear projection, same matrix
        out[ours] = value
    if unmapped:
        raise CheckpointError(source, unmapped=unmapped)
    return out


# ---- VAE ----------------------------------------------------------------------------------

_VAE_RESNET_NAMES = {"norm1": "norm1", "conv1": "conv1", "norm2": "norm2", "conv2": "conv2",
                     "nin_shortcut": "conv_shortcut"}
_VAE_ATTENTION_NAMES = {"norm": "group_norm", "q": "to_q", "k": "to_k", "v": "to_v", "proj_out": "to_out.0"}
_PARAM = r"(weight|bias)"


def _vae_name(name: str, levels: int) -> str | None:
    """One CompVis VAE key (after first_stage_model.) as ours, None when no rule covers it."""
    resnet = "|".join(_VAE_RESNET_NAMES)
    if re.fullmatch(rf"(post_)?quant_conv\.{_PARAM}", name):
        return ("decoder." if name.startswith("post_") else "encoder.") + name
    match = re.fullmatch(rf"(encoder|decoder)\.(conv_in|conv_out|norm_out)\.{_PARAM}", name)
    if match:
        layer = "conv_norm_out" if match.group(2) == "norm_out" else match.group(2)
        return f"{match.group(1)}.{layer}.{match.group(3)}"
    match = re.fullmatch(rf"encoder\.down\.(\d+)\.block\.(\d+)\.({resnet})\.{_PARAM}", name)
    if match:
        return f"encoder.down_blocks.{match.group(1)}.resnets.{match.group(2)}." \
               f"{_VAE_RESNET_NAMES[match.group(3)]}.{match.group(4)}"
    match = re.fullmatch(rf"encoder\.down\.(\d+)\.downsample\.conv\.{_PARAM}", name)
    if match:
        return f"encoder.down_blocks.{match.group(1)}.downsamplers.0.conv.{match.group(2)}"
    # CompVis numbers the decoder's levels from the top (up.0 runs last); ours in run order
    match = re.fullmatch(rf"decoder\.up\.(\d+)\.block\.(\d+)\.({resnet})\.{_PARAM}", name)
    if match and int(match.group(1)) < levels:
        return f"decoder.up_blocks.{levels - 1 - int(match.group(1))}.resnets.{match.group(2)}." \
               f"{_VAE_RESNET_NAMES[match.group(3)]}.{match.group(4)}"
    match = re.fullmatch(rf"decoder\.up\.(\d+)\.upsample\.conv\.{_PARAM}", name)
    if match and int(match.group(1)) < levels:
        return f"decoder.up_blocks.{levels - 1 - int(match.group(1))}.upsamplers.0.conv.{match.group(2)}"
    match = re.fullmatch(rf"(encoder|decoder)\.mid\.block_([12])\.({resnet})\.{_PARAM}", name)
    if match:
        return f"{match.group(1)}.mid_block.resnets.{int(match.group(2)) - 1}." \
               f"{_VAE_RESNET_NAMES[match.group(3)]}.{match.group(4)}"
    match = re.fullmatch(rf"(encoder|decoder)\.mid\.attn_1\.(norm|q|k|v|proj_out)\.{_PARAM}", name)
    if match:
        return f"{match.group(1)}.mid_block.attentions.0.{_VAE_ATTENTION_NAMES[match.group(2)]}.{match.group(3)}"
    return None


def vae_state_dict_from_sd(state: dict[str, torch.Tensor], side: str, config: AutoencoderConfig,
                           source: str = "checkpoint") -> dict[str, torch.Tensor]:
    """One side ("decoder" / "encoder") of the `first_stage_model.*` keys on VAEDecoder / VAEEncoder names."""
    if side not in ("decoder", "encoder"):
        raise ValueError(f"side must be decoder or encoder, not {side!r}")
    out, unmapped = {}, []
    for key, value in state.items():
        if not key.startswith(VAE_PREFIX) or _NOT_WEIGHTS.fullmatch(key):
            continue
        name = _vae_name(key[len(VAE_PREFIX):], len(config.block_out_channels))
        if name is None:
            unmapped.append(key)
        elif name.startswith(side + "."):
            out[name] = vae_attention_value(name, value)  # CompVis' attention projections are 1x1 convs
    if unmapped:
        raise CheckpointError(source, unmapped=unmapped)
    return out


# ---- text encoder -------------------------------------------------------------------------

def text_encoder_state_dict_from_sd(state: dict[str, torch.Tensor],
                                    source: str = "checkpoint") -> dict[str, torch.Tensor]:
    """`cond_stage_model.transformer.*` (a CLIPTextModel, with or without `text_model.`) on our names."""
    if any(key.startswith(OPENCLIP_PREFIX) for key in state):
        raise CheckpointError(source, reason="the text encoder is OpenCLIP's (cond_stage_model.model.*, an SD-2.x "
                                             "file); only SD-1.x's transformers CLIP layout is mapped")
    text = {key[len(TEXT_PREFIX):]: value for key, value in state.items()
            if key.startswith(TEXT_PREFIX) and not _NOT_WEIGHTS.fullmatch(key)}
    other = [key for key in state if key.startswith("cond_stage_model.") and not key.startswith(TEXT_PREFIX)
             and not _NOT_WEIGHTS.fullmatch(key)]
    if other:
        raise CheckpointError(source, unmapped=other)
    try:
        return text_encoder_state_dict_from_hf(text, source)
    except CheckpointError as exc:  # name the keys as they are in the file
        raise CheckpointError(source, unmapped=[TEXT_PREFIX + key for key in exc.unmapped]) from None
