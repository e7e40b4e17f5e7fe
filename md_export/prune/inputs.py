"""UNet inputs for importance ranking, distillation and parity: calibration rows or seeded noise."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from md_export.models import Preset

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
    from md_export.calibration.builders import CalibrationError, load_calibration

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


UNetInputs = tuple[torch.Tensor, torch.Tensor, torch.Tensor]
# Parity inputs (EVAL_SEED) and best-checkpoint inputs (VALIDATION_SEED) are held out from training
# and from each other.
EVAL_SEED = 4242
VALIDATION_SEED = 4343
# Held-out sets seed their generators with integers below 2**63; every training batch's seed has
# bit 63 set (`training_seed`), so no (seed, step) can ever draw a held-out set. A plain
# `seed * K + step` could: with seed 0, steps 4242 and 4343 were the evaluation and validation sets.
TRAINING_SEED_BIT = 1 << 63
_TRAINING_STREAM = 1  # SeedSequence spawn-key tag of the training batches (other purposes: other tags)


def training_seed(seed: int, step: int) -> int:
    """The torch seed of training batch `step`: numpy's SeedSequence over (seed; stream, step), so
    steps and seeds do not share streams, then bit 63 set to keep it off every held-out seed."""
    sequence = np.random.SeedSequence(seed % 2**64, spawn_key=(_TRAINING_STREAM, step))
    return TRAINING_SEED_BIT | int(sequence.generate_state(1, np.uint64)[0])


@dataclass(frozen=True)
class DistillInputs:
    """Disjoint inputs for one distillation: what it trains on, chooses its checkpoint on, reports on."""

    train: UNetInputs | None  # calibration rows for the training batches (None: seeded noise only)
    validation: UNetInputs  # the best checkpoint is chosen on these
    evaluation: UNetInputs  # parity to the teacher (before / after) is reported on these


def distill_inputs(preset: Preset, calibration: str | Path | None, count: int = 2,
                   evaluation_seed: int = EVAL_SEED, validation_seed: int = VALIDATION_SEED) -> DistillInputs:
    """With calibration, `count` rows each are held out for evaluation and validation (a seeded
    split) and never trained on; without it, both are seeded noise the training batches never draw."""
    if calibration is None:
        return DistillInputs(None, random_unet_inputs(preset, count, torch.Generator().manual_seed(validation_seed)),
                             random_unet_inputs(preset, count, torch.Generator().manual_seed(evaluation_seed)))
    rows = calibration_unet_inputs(calibration, preset)
    total = rows[0].shape[0]
    if total <= 2 * count:
        raise PruneError(f"calibration {calibration} holds {total} UNet inputs; distillation holds out {2 * count} "
                         "for validation and evaluation and needs more to train on (calibrate more prompts or steps)")
    order = torch.randperm(total, generator=torch.Generator().manual_seed(evaluation_seed))

    def take(index: torch.Tensor) -> UNetInputs:
        index = torch.sort(index).values
        return tuple(t.index_select(0, index) for t in rows)

    return DistillInputs(take(order[2 * count:]), take(order[count:2 * count]), take(order[:count]))
