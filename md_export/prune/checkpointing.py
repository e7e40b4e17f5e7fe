"""Resumable training state: one torch file, written atomically."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import torch


def save_state(state: dict, path: Path) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        torch.save(state, tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def load_state(path: Path, device: torch.device | str = "cpu") -> dict | None:
    path = Path(path)
    if not path.exists():
        return None
    # our own file (optimizer state holds plain Python objects), so weights_only=False is safe
    return torch.load(path, map_location=device, weights_only=False)
