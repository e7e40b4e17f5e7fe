"""UNet inputs for importance ranking, distillation and parity: calibration rows or seeded noise."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from models import Preset

from .errors import PruneError

TRAIN_TIMESTEPS = 1000


def random_unet_inputs(preset: Preset, count: int, generator: torch.Generator,
                       resolution: int | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Seeded latents ~ N(0,1), timesteps uniform over the training range, text embeddings ~ N(0,1)."""
    _, channels, side, _ = preset.latent_shape(resolution, count)
    tokens, width = preset.text_encoder.max_position_embeddings, preset.text_encoder.hidden_size
    latent = torch.randn((count, channels, side, side), generator=generator)
    timestep = torch.randint(0, TRAIN_TIMESTEPS, (count,), generator=generator).float()
    text_emb = torch.randn((count, tokens, width), generator=generator)
    return latent, timestep, text_emb


def calibration_unet_inputs(directory: str | Path, preset: Preset,
                            resolution: int | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Every recorded UNet call of `md-export calibrate` (real sampler inputs)."""
    from calibration.builders import CalibrationError, load_calibration

    try:
        arrays = load_calibration(directory, "unet")
    except CalibrationError as exc:
        raise PruneError(str(exc)) from None
    expected = list(preset.latent_shape(resolution)[1:])
    if list(arrays["latent"].shape[1:]) != expected:
        raise PruneError(f"calibration {directory} latents are {list(arrays['latent'].shape[1:])}, "
                         f"this preset takes {expected} (another resolution or preset?)")
    if arrays["text_emb"].shape[-1] != preset.text_encoder.hidden_size:
        raise PruneError(f"calibration {directory} text embeddings do not match this preset's text encoder")
    return tuple(torch.from_numpy(np.ascontiguousarray(arrays[name])).float()
                 for name in ("latent", "timestep", "text_emb"))


def ranking_inputs(preset: Preset, calibration: str | Path | None, count: int = 4,
                   seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    if calibration is not None:
        rows = calibration_unet_inputs(calibration, preset)
        pick = torch.linspace(0, rows[0].shape[0] - 1, min(count, rows[0].shape[0])).long()
        return tuple(t.index_select(0, pick) for t in rows)
    return random_unet_inputs(preset, count, torch.Generator().manual_seed(seed))
