"""Turn a training run into the weights that ship with the package (models/weights/<preset>/).

Two size cuts that change no trained behaviour:
  - fp16 storage (the modules load them into fp32; the shipped files are the reference weights),
  - token-embedding rows of tokens no training caption contains are zeroed: they were never
    updated (random init), carry no information, and zeros compress to nothing in git and wheels.
Usage: python -m md_export.train.ship RUN_DIR [DEST_DIR]
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from safetensors.torch import load_file

from md_export.models import get_preset
from md_export.models.presets import MICRO_PRESET
from md_export.models.shipped_weights import WEIGHTS_ROOT

from ..data.digits import DIGIT_WORDS, caption as digit_caption
from ..data.shapes import all_scenes
from ..export.manifest import write_bytes_atomic
from ..tokenizer import Tokenizer

COMPONENT_FILES = ("text_encoder", "unet", "vae_decoder", "vae_encoder")
TOKEN_EMBEDDING = "embeddings.token_embedding.weight"


def trained_token_ids(context_length: int) -> torch.Tensor:
    captions = [s.caption() for s in all_scenes()] + [digit_caption(d) for d in range(len(DIGIT_WORDS))] + [""]
    return torch.from_numpy(Tokenizer(context_length)(captions)).unique()


def ship_weights(run_dir: str | Path, dest: str | Path | None = None, preset_name: str = MICRO_PRESET) -> Path:
    from safetensors.torch import save

    preset = get_preset(preset_name)
    dest = Path(dest) if dest is not None else WEIGHTS_ROOT / preset_name
    dest.mkdir(parents=True, exist_ok=True)
    keep = trained_token_ids(preset.text_encoder.max_position_embeddings)
    for component in COMPONENT_FILES:
        state = load_file(str(Path(run_dir) / f"{component}.safetensors"))
        if component == "text_encoder":
            table = state[TOKEN_EMBEDDING]
            trimmed = torch.zeros_like(table)
            trimmed[keep] = table[keep]
            state[TOKEN_EMBEDDING] = trimmed
        half = {k: (v.half() if v.is_floating_point() else v).contiguous() for k, v in state.items()}
        write_bytes_atomic(dest / f"{component}.safetensors", save(half, metadata={"preset": preset_name,
                                                                                   "stored_as": "float16"}))
    return dest


if __name__ == "__main__":
    print(ship_weights(sys.argv[1], sys.argv[2] if len(sys.argv) > 2 else None))
