"""Torch eager latency of one UNet call (batch 1 and the guidance batch 2) for a preset.

    python -m md_export.benchmarks.unet_step --preset mobilediffusion --runs 5

Prints JSON: per batch size, init time, first-call time and the median / min / max of the timed
runs, plus the GFLOP/s the median implies. The full harness (runtimes, phones) is `md-export bench`.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time

import torch

from md_export.summary import component_cost
from md_export.models import build_component, component_example_inputs, get_preset


def time_unet(preset_name: str, resolution: int | None, batches: list[int], warmup: int, runs: int, threads: int) -> dict:
    torch.set_num_threads(threads)
    preset = get_preset(preset_name)
    start = time.perf_counter()
    unet = build_component(preset, "unet")
    init_ms = (time.perf_counter() - start) * 1e3
    gflops_per_sample = component_cost(preset, "unet", resolution).gflops
    results = {}
    for batch in batches:
        inputs = component_example_inputs(preset, "unet", resolution, batch=batch)
        with torch.inference_mode():
            start = time.perf_counter()
            unet(*inputs)
            first_ms = (time.perf_counter() - start) * 1e3
            for _ in range(warmup):
                unet(*inputs)
            samples = []
            for _ in range(runs):
                start = time.perf_counter()
                unet(*inputs)
                samples.append((time.perf_counter() - start) * 1e3)
        median = statistics.median(samples)
        results[f"batch{batch}"] = {
            "first_ms": round(first_ms, 1),
            "latency_ms": {"p50": round(median, 1), "min": round(min(samples), 1), "max": round(max(samples), 1)},
            "runs": runs,
            "achieved_gflops_per_s": round(gflops_per_sample * batch / (median / 1e3), 1),
        }
    return {
        "preset": preset.name,
        "resolution": resolution or preset.resolution,
        "runtime": f"torch {torch.__version__} eager fp32",
        "threads": threads,
        "machine": f"{platform.machine()} {platform.processor() or ''}".strip(),
        "unet_gflops_per_call_batch1": round(gflops_per_sample, 2),
        "build_ms": round(init_ms, 1),
        "unet_step": results,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="mobilediffusion")
    parser.add_argument("--resolution", type=int, default=None)
    parser.add_argument("--batches", default="1,2", help="comma-separated batch sizes (2 = with guidance)")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args()
    batches = [int(b) for b in args.batches.split(",")]
    print(json.dumps(time_unet(args.preset, args.resolution, batches, args.warmup, args.runs, args.threads), indent=2))


if __name__ == "__main__":
    main()
