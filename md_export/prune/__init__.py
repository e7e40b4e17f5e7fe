"""Pruning (magnitude, channels, blocks), distillation recovery, light-decoder training, UFOGen.

Every pruned model is a preset directory (models.preset_io): preset.json + safetensors, which
`md-export export / quantize / parity` take like any named preset.
"""

from .errors import PruneError

__all__ = ["PruneError"]
