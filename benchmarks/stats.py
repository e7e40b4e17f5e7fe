"""Latency statistics over timed samples: the seven numbers every result carries.

Percentiles use linear interpolation between order statistics (numpy's default), and std is the
population standard deviation (ddof=0), the convention LiteRT's benchmark_model prints, so numbers
from the host harness and from a phone mean the same thing.
"""

from __future__ import annotations

import math

import numpy as np

STAT_KEYS = ("min", "mean", "std", "p50", "p90", "p99", "max")


def latency_stats(samples_ms: list[float] | np.ndarray) -> dict[str, float]:
    values = np.asarray(samples_ms, dtype=np.float64)
    if values.size == 0:
        raise ValueError("no samples: at least one timed run is needed for statistics")
    if not np.all(np.isfinite(values)):
        raise ValueError("samples contain NaN or infinity")
    p50, p90, p99 = np.percentile(values, [50, 90, 99])
    return {
        "min": float(values.min()),
        "mean": float(values.mean()),
        "std": float(values.std(ddof=0)),
        "p50": float(p50),
        "p90": float(p90),
        "p99": float(p99),
        "max": float(values.max()),
    }


def partial_stats(known: dict[str, float | None]) -> dict[str, float | None]:
    """Stats from a tool that prints only some of them (avg, min, max...): the rest stay None, never guessed."""
    return {key: (None if known.get(key) is None or math.isnan(known[key]) else float(known[key]))
            for key in STAT_KEYS}
