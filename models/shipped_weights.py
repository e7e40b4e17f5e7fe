"""Trained weights that ship inside the package, per named preset (models/weights/<preset>/).

Only `mobilediffusion-micro` has them (trained with `md-export train`, a few MB); every other
named preset has seeded random weights unless a checkpoint directory is given.
"""

from __future__ import annotations

from pathlib import Path

WEIGHTS_ROOT = Path(__file__).resolve().parent / "weights"
_PIPELINE_FILES = ("text_encoder.safetensors", "unet.safetensors", "vae_decoder.safetensors")


def shipped_weights_dir(preset_name: str) -> Path | None:
    """The checkpoint directory shipped for this preset, None when there is none."""
    directory = WEIGHTS_ROOT / preset_name
    return directory if all((directory / name).is_file() for name in _PIPELINE_FILES) else None
