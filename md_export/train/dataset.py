"""The training images and captions of a run, assembled once from the offline generators."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..data.digits import digits_dataset
from ..data.shapes import shapes_dataset
from .settings import TrainSettings


@dataclass
class TrainingSet:
    images: torch.Tensor  # (N, 3, 64, 64) float in [-1, 1]
    captions: list[str]
    is_digit: np.ndarray  # (N,) bool: where batches draw the digits share from

    def __len__(self) -> int:
        return len(self.captions)


def build_training_set(settings: TrainSettings) -> TrainingSet:
    parts: list[tuple[np.ndarray, list[str], bool]] = []
    if settings.data in ("shapes", "both"):
        images, captions = shapes_dataset(settings.shapes_count, seed=settings.seed, split_seed=settings.split_seed,
                                           shape_weights=settings.shape_weights)
        parts.append((images, captions, False))
    if settings.data in ("digits", "both"):
        images, captions = digits_dataset(split_seed=settings.split_seed)
        parts.append((images, captions, True))
    images = np.concatenate([p[0] for p in parts])
    captions = [c for p in parts for c in p[1]]
    is_digit = np.concatenate([np.full(len(p[1]), p[2]) for p in parts])
    tensor = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 127.5 - 1.0
    return TrainingSet(tensor.contiguous(), captions, is_digit)


def batch_indices(data: TrainingSet, settings: TrainSettings, batch: int, generator: torch.Generator) -> torch.Tensor:
    """Seeded indices; with both kinds present, `digits_fraction` of the batch are digits."""
    digit_rows = np.flatnonzero(data.is_digit)
    shape_rows = np.flatnonzero(~data.is_digit)
    if len(digit_rows) == 0 or len(shape_rows) == 0:
        return torch.randint(0, len(data), (batch,), generator=generator)
    digits = int(round(batch * settings.digits_fraction))
    pick_d = torch.randint(0, len(digit_rows), (digits,), generator=generator).numpy()
    pick_s = torch.randint(0, len(shape_rows), (batch - digits,), generator=generator).numpy()
    return torch.from_numpy(np.concatenate([digit_rows[pick_d], shape_rows[pick_s]]))
