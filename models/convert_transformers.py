"""transformers `CLIPTextModel` / `CLIPModel` weights and configs onto our CLIPTextEncoder.

Our parameter names are CLIPTextModel's without the `text_model.` prefix, so the mapping is a
prefix strip; what this module adds is knowing which keys are not text-encoder weights at all and
naming any key that is neither.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import torch

from .checkpoint import (CheckpointError, UnsupportedConfigError, load_state_dict_strict, read_folder_weights,
                         read_json, read_state_dict)
from .text_encoder import CLIPTextEncoder, TextEncoderConfig

PREFIX = "text_model."
# A buffer (arange) some transformers versions save; not a weight.
IGNORED_KEYS = ("embeddings.position_ids",)
# Parts of a whole CLIPModel / CLIPTextModelWithProjection that the UNet never sees.
NOT_TEXT_MODEL = ("vision_model.", "visual_projection.", "text_projection.", "logit_scale")
WEIGHT_STEMS = ("model", "pytorch_model")
_OUR_KEY = re.compile(
    r"(embeddings\.(token|position)_embedding\.weight"
    r"|encoder\.layers\.\d+\.(layer_norm[12]|self_attn\.(q|k|v|out)_proj|mlp\.fc[12])\.(weight|bias)"
    r"|final_layer_norm\.(weight|bias))"
)


def text_encoder_state_dict_from_hf(state: dict[str, torch.Tensor],
                                    source: str = "checkpoint") -> dict[str, torch.Tensor]:
    """A CLIPTextModel (or CLIPModel) state dict, with or without the `text_model.` prefix, on our names."""
    out, unmapped = {}, []
    for key, value in state.items():
        if key.startswith(NOT_TEXT_MODEL):
            continue
        name = key.removeprefix(PREFIX)
        if name in IGNORED_KEYS:
            continue
        if _OUR_KEY.fullmatch(name):
            out[name] = value
        else:
            unmapped.append(key)
    if unmapped:
        raise CheckpointError(source, unmapped=unmapped)
    return out


def text_encoder_config_from_hf(data: dict, source: str = "config.json") -> TextEncoderConfig:
    """A CLIPTextConfig (or a CLIPConfig's text_config) as ours."""
    try:
        return TextEncoderConfig.from_hf_dict(data)
    except (TypeError, ValueError) as exc:
        raise UnsupportedConfigError(source, [str(exc)]) from None


def load_text_encoder_from_hf(path: str | os.PathLike, config: TextEncoderConfig | None = None) -> CLIPTextEncoder:
    """A transformers CLIPTextModel folder (config.json + model.safetensors / pytorch_model.bin, or
    shards) or a single weights file (then `config`, or a config.json beside it, gives the shape)."""
    path = Path(path)
    folder = path if path.is_dir() else path.parent
    if config is None:
        config_path = folder / "config.json"
        if not config_path.is_file():
            raise CheckpointError(str(path), reason="no config.json (expected a CLIPTextModel directory)")
        config = text_encoder_config_from_hf(read_json(config_path), str(config_path))
    state = read_folder_weights(path, WEIGHT_STEMS) if path.is_dir() else read_state_dict(path)
    model = CLIPTextEncoder(config)
    load_state_dict_strict(model, text_encoder_state_dict_from_hf(state, str(path)), str(path))
    return model
