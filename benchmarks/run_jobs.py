"""Run host jobs one after another into a result. Ctrl-C stops the loop: the result keeps every item
finished so far (and the partial one, if it had timed samples) and is marked `interrupted`."""

from __future__ import annotations

from .harness import make_item, time_runner
from .init_cache import before_timed_load, init_fields
from .progress import BenchProgress
from .schema import add_item
from .targets.host import Job


def run_jobs(jobs: list[Job], result: dict, warmup: int, runs: int, min_seconds: float, threads: int,
             progress: BenchProgress) -> dict:
    peak = result.get("machine_peak")
    for job in jobs:
        loaded = {}

        def load(job=job):
            loaded[job.component] = job.load()
            return loaded[job.component]

        try:
            with progress.item(job.name, warmup + runs) as tick:
                # onnxruntime: a load without the cache first (init_ms_cold), then the timed one from it
                before = before_timed_load({job.component: job.cached_load}) if job.cached_load else None
                timing = time_runner(load, job.feeds, warmup, runs, min_seconds, tick)
        except KeyboardInterrupt:
            result["interrupted"] = True
            progress.note(f"interrupted during {job.name} before any timed run; keeping {len(result['items'])} item(s)")
            break
        init = init_fields(before, loaded, timing.init_ms) if before is not None else {}
        loaded.clear()  # the runner goes now, not when the next job's replaces it
        add_item(result, make_item(
            name=job.name, level="component", component=job.component, runtime=job.runtime,
            precision=job.precision, threads=threads, timing=timing, gflops=job.gflops, peak=peak,
            resolution=job.resolution, batch=job.batch, **job.extra, **init))
        if timing.interrupted:
            result["interrupted"] = True
            progress.note(f"interrupted during {job.name}: kept its {len(timing.samples_ms)} timed run(s)")
            break
    return result
