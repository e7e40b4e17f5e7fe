"""Paired latency: two exported UNets timed in alternation, so background load weighs on both alike.

Used where a table reports a ratio (quantized vs fp32, pruned vs unpruned) on a machine that may
be doing other work; the ratio holds even when the absolute milliseconds drift. The timing itself
is `md_export.quantize.speed.paired_speed`, the check `md-export quantize` runs on every artifact.
"""

from __future__ import annotations

from pathlib import Path

from md_export.export.manifest import read_manifest
from md_export.parity import load_reference
from md_export.quantize.speed import paired_speed


def _unet_entry(directory: Path, fmt: str, precision: str | None) -> dict:
    return next(e for e in read_manifest(directory)["artifacts"]
                if e["component"] == "unet" and e["format"] == fmt and precision in (None, e["precision"]))


def paired_unet_p50_ms(baseline_dir: Path, candidate_dir: Path, fmt: str, runs: int,
                       baseline_precision: str | None = "fp32", threads: int | None = None) -> tuple[float, float]:
    """p50 of the baseline's and the candidate's UNet (the candidate's first UNet of `fmt`, any
    precision), runs alternating between the two, both on the baseline's reference inputs;
    `threads` None = the runtime's default."""
    baseline_dir, candidate_dir = Path(baseline_dir), Path(candidate_dir)
    baseline = _unet_entry(baseline_dir, fmt, baseline_precision)
    feeds, _ = load_reference(baseline_dir, baseline)
    check = paired_speed(baseline_dir, baseline, candidate_dir, _unet_entry(candidate_dir, fmt, None), feeds, runs,
                         threads or 0)
    return check.source_p50_ms, check.p50_ms
