"""Paired latency: two exported UNets timed in alternation, so background load weighs on both alike.

Used where a table reports a ratio (quantized vs fp32, pruned vs unpruned) on a machine that may
be doing other work; the ratio holds even when the absolute milliseconds drift.
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path

from md_export.export.manifest import read_manifest
from md_export.parity import load_reference
from md_export.runtimes import open_artifact


def _unet_runner(directory: Path, fmt: str, precision: str | None, threads: int | None):
    entry = next(e for e in read_manifest(directory)["artifacts"]
                 if e["component"] == "unet" and e["format"] == fmt and precision in (None, e["precision"]))
    runner = open_artifact(directory, entry, threads=threads)
    feeds, _ = load_reference(directory, entry)
    runner.run(feeds)  # first call: allocation, kernel selection
    return runner, feeds


def paired_unet_p50_ms(baseline_dir: Path, candidate_dir: Path, fmt: str, runs: int,
                       baseline_precision: str | None = "fp32", threads: int | None = None) -> tuple[float, float]:
    """p50 of the baseline's and the candidate's UNet (the candidate's first UNet of `fmt`, any
    precision), runs alternating between the two; `threads` None = the runtime's default."""
    runners = [_unet_runner(Path(baseline_dir), fmt, baseline_precision, threads),
               _unet_runner(Path(candidate_dir), fmt, None, threads)]
    times: list[list[float]] = [[], []]
    for _ in range(runs):
        for index, (runner, feeds) in enumerate(runners):
            start = time.perf_counter()
            runner.run(feeds)
            times[index].append((time.perf_counter() - start) * 1e3)
    return statistics.median(times[0]), statistics.median(times[1])
