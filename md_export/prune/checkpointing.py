"""Resumable training state: one torch file, written atomically."""

from __future__ import annotations

from pathlib import Path

import torch


def save_state(state: dict, path: Path) -> None:
    from ..export.manifest import write_file_atomic

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_file_atomic(path, lambda tmp: torch.save(state, tmp), mode=None)


def load_state(path: Path, device: torch.device | str = "cpu") -> dict | None:
    path = Path(path)
    if not path.exists():
        return None
    # our own file (optimizer state holds plain Python objects), so weights_only=False is safe
    return torch.load(path, map_location=device, weights_only=False)
