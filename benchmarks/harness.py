"""The measuring loop: load (init), first call, W warm-up calls, then N timed calls (or until a
minimum duration has passed), and the result item in the shared schema.

Ctrl-C during the timed calls keeps the samples taken so far (the item is marked `interrupted`);
Ctrl-C before any timed sample propagates, and the caller reports the items already finished.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from md_export.runtimes.base import Runner

from .limit import peak_for
from .memory import peak_rss_mb
from .stats import latency_stats

Tick = Callable[[], None]


@dataclass
class Timing:
    init_ms: float
    first_ms: float
    samples_ms: list[float] = field(default_factory=list)
    interrupted: bool = False


def _ms_since(start: float) -> float:
    return (time.perf_counter() - start) * 1e3


def time_calls(call: Callable[[], object], warmup: int, runs: int, min_seconds: float = 0.0,
               tick: Tick | None = None) -> tuple[float, list[float], bool]:
    """(first_ms, samples_ms, interrupted) of a zero-argument call."""
    start = time.perf_counter()
    call()
    first_ms = _ms_since(start)
    for _ in range(warmup):
        call()
        if tick:
            tick()
    samples: list[float] = []
    deadline = time.perf_counter() + min_seconds
    try:
        while len(samples) < runs or time.perf_counter() < deadline:
            start = time.perf_counter()
            call()
            samples.append(_ms_since(start))
            if tick:
                tick()
    except KeyboardInterrupt:
        if not samples:
            raise
        return first_ms, samples, True
    return first_ms, samples, False


Feeds = dict[str, np.ndarray]


def time_runner(load: Callable[[], Runner], feeds: Feeds | Callable[[Runner], Feeds], warmup: int, runs: int,
                min_seconds: float = 0.0, tick: Tick | None = None) -> Timing:
    """`feeds` may be a function of the loaded runner (random feeds need its input specs); building
    them is not part of init_ms."""
    start = time.perf_counter()
    runner = load()
    init_ms = _ms_since(start)
    if callable(feeds):
        feeds = feeds(runner)
    first_ms, samples, interrupted = time_calls(lambda: runner.run(feeds), warmup, runs, min_seconds, tick)
    return Timing(init_ms, first_ms, samples, interrupted)


def fraction_of_peak(achieved: float | None, precision: str, peak: dict | None) -> float | None:
    """Integer work is held against the int8 GEMM peak, everything else against the fp32 one (the
    same rule as limit_ms: limit.compute_class)."""
    reference = peak_for(precision, peak)
    return achieved / reference if achieved is not None and reference else None


def make_item(*, name: str, level: str, component: str | None, runtime: str, precision: str, threads: int | None,
              timing: Timing, gflops: float | None = None, peak: dict | None = None, **extra) -> dict:
    stats = latency_stats(timing.samples_ms)
    achieved = gflops / (stats["p50"] / 1e3) if gflops else None
    item = {
        "name": name,
        "level": level,
        "component": component,
        "runtime": runtime,
        "precision": precision,
        "threads": threads,
        "init_ms": round(timing.init_ms, 3),
        "first_ms": round(timing.first_ms, 3),
        "peak_rss_mb": round(peak_rss_mb(), 1),
        "runs": len(timing.samples_ms),
        "latency_ms": {k: round(v, 4) for k, v in stats.items()},
        "gflops": round(gflops, 4) if gflops is not None else None,
        "achieved_gflops_per_s": round(achieved, 2) if achieved is not None else None,
        "fraction_of_peak": None,
        "interrupted": timing.interrupted,
    }
    fraction = fraction_of_peak(achieved, precision, peak)
    item["fraction_of_peak"] = round(fraction, 4) if fraction is not None else None
    item.update(extra)
    return item
