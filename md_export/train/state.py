"""Resumable training state: one file written atomically, read back on the next start."""

from __future__ import annotations

from pathlib import Path

import torch

STATE_FILE = "train_state.pt"


def save_state(out: Path, state: dict) -> None:
    from ..export.manifest import write_file_atomic

    write_file_atomic(Path(out) / STATE_FILE, lambda tmp: torch.save(state, tmp), mode=None)


def load_state(out: Path) -> dict | None:
    path = out / STATE_FILE
    if not path.exists():
        return None
    return torch.load(path, weights_only=False)


def step_generator(seed: int, phase: int, step: int) -> torch.Generator:
    """A fresh generator per step: a resumed run draws exactly what an uninterrupted one would."""
    return torch.Generator().manual_seed(seed * 1_000_003 + phase * 100_003 + step)
