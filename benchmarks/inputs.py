"""Benchmark feeds: the exporter's real seeded inputs when the artifact has a reference file,
seeded random ones of the right shapes and dtypes otherwise. Always deterministic."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from md_export.runtimes.base import TensorSpec

# Random token ids stay inside CLIP's vocabulary so an embedding lookup never goes out of range.
DEFAULT_VOCAB = 49408


def reference_feeds(directory: str | Path, entry: dict) -> dict[str, np.ndarray] | None:
    """`input:<name>` arrays of the artifact's reference npz, or None when it has none."""
    reference = entry.get("reference")
    if not reference:
        return None
    path = Path(directory) / reference
    if not path.is_file():
        return None
    with np.load(path) as data:
        feeds = {key.removeprefix("input:"): data[key] for key in data.files if key.startswith("input:")}
    return feeds or None


def random_feeds(specs: tuple[TensorSpec, ...], seed: int = 0, vocab: int = DEFAULT_VOCAB) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    feeds = {}
    for spec in specs:
        shape = tuple(d if d > 0 else 1 for d in spec.shape)  # a free dim (batch) is benchmarked at 1
        dtype = np.dtype(spec.dtype)
        if np.issubdtype(dtype, np.integer):
            feeds[spec.name] = rng.integers(0, vocab, size=shape).astype(dtype)
        elif spec.name == "timestep":
            feeds[spec.name] = rng.uniform(0.0, 999.0, size=shape).astype(dtype)
        else:
            feeds[spec.name] = rng.standard_normal(shape).astype(dtype)
    return feeds
