"""Does the quantized artifact pay? Its latency against its own float source, on this host, now.

A quantized artifact slower than its fp32 source is a bug whatever its parity says (signed int8
activations on x86 onnxruntime ran at 0.87x of fp32 and passed parity). The two are timed in
alternation after a warm-up each, so background load weighs on both alike; the ratio is recorded
in the manifest and printed, never asserted in tests (hosts differ: DESIGN.md section 3).
"""

from __future__ import annotations

import statistics
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from ..runtimes import open_artifact

SPEED_RUNS = 3  # alternating pairs; the full UNet step costs seconds per call


@dataclass(frozen=True)
class SpeedCheck:
    source_file: str
    source_p50_ms: float
    p50_ms: float
    runs: int
    threads: int  # 0 = the runtime's default (all cores)

    @property
    def speedup(self) -> float:
        return self.source_p50_ms / self.p50_ms

    @property
    def slower(self) -> bool:
        return self.speedup < 1.0

    def as_dict(self) -> dict:
        return {**asdict(self), "speedup": round(self.speedup, 3), "slower": self.slower}

    def describe(self) -> str:
        verdict = "SLOWER than" if self.slower else "faster than"
        return (f"{self.speedup:.2f}x {verdict} its float source {self.source_file} "
                f"(p50 {self.p50_ms:.1f} vs {self.source_p50_ms:.1f} ms, {self.runs} alternating runs)")


def _median_ms(samples: list[float]) -> float:
    return round(statistics.median(samples) * 1e3, 3)


def paired_speed(source_dir: Path, source_entry: dict, candidate_dir: Path, candidate_entry: dict,
                 feeds: dict[str, np.ndarray], runs: int = SPEED_RUNS, threads: int = 0) -> SpeedCheck:
    """Time `candidate_entry` against `source_entry` on the same feeds, alternating call by call."""
    runners = [open_artifact(source_dir, source_entry, threads=threads or None),
               open_artifact(candidate_dir, candidate_entry, threads=threads or None)]
    for runner in runners:
        runner.run(feeds)  # first call: allocation, kernel selection, weight pre-packing
    samples: list[list[float]] = [[], []]
    for _ in range(runs):
        for index, runner in enumerate(runners):
            start = time.perf_counter()
            runner.run(feeds)
            samples[index].append(time.perf_counter() - start)
    return SpeedCheck(source_entry["file"], _median_ms(samples[0]), _median_ms(samples[1]), runs, threads)
