"""PNG output, written atomically (temp name + rename)."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def save_png(image: np.ndarray, path: str | Path) -> Path:
    from PIL import Image

    from .export.manifest import write_file_atomic

    return write_file_atomic(path, lambda tmp: Image.fromarray(image).save(tmp, format="PNG"))
