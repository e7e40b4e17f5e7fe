"""Several artifact directories benchmarked together, rivals called in alternation.

The artifacts of one component, runtime, resolution and batch (the fp32 export's, each quantized
recipe's) form a group. Each member of a group is loaded and warmed in turn, exactly as
`bench run` does for one artifact (init_ms, the onnxruntime cache's cold and cached loads, the first
call, the warm-up calls); then the timed calls go round the group, one call of each member per
round. A noisy host's drift then weighs on every member alike, and their ratio holds: timed one
directory after the other, minutes apart, README command 1's benchmark put LiteRT's dynamic int8
text encoder at 0.76x of its fp32 one (139.3 against 106.4 ms), and 1.23x called in alternation a
minute later (72.6 against 89.0 ms).

One result per directory, in the schema of `bench run --artifacts DIR`: every item also names the
files it alternated with (`alternated_with`), and the settings say how (`alternation`). The machine
peak is probed several times through the run (before the first group, between groups, after the
last) and every result carries the best of those probes: on a noisy host one probe can read low,
and a low peak makes the limit of an end-to-end row too generous. In one run on the 2-core AVX2
EPYC a single probe read 125.5 fp32 GFLOP/s, and onnxruntime's fp32 pipeline then came out at
0.998x of its "limit"; the same host's probes had reached 147.5 in the run before.

    directories ──> jobs per directory ──> groups (component, runtime, resolution, batch)
                                              │  load, first call, warm-up: member by member
                                              │  timed rounds: member 1, member 2, ..., repeat
                                              └─> one item per member ──> its directory's result
"""

from __future__ import annotations

import os
import time
from collections import OrderedDict
from pathlib import Path
from typing import Callable

from .harness import Timing, _ms_since, make_item, time_calls
from .init_cache import before_timed_load, init_fields
from .progress import BenchProgress
from .schema import add_item, new_result
from .targets.host import HostSettings, Job, artifact_dir_jobs

ALTERNATION = ("the artifacts of one component, runtime, resolution and batch across the directories, "
               "one call each per round")


def bench_alternated(directories: list[Path], settings: HostSettings, runtimes: list[str] | None, warmup: int,
                     runs: int, progress: BenchProgress, probe: Callable[[], dict] | None = None,
                     probes: int = 3) -> dict[Path, dict]:
    """directory -> its result. `probe` (machine_peak.measure_machine_peak): called `probes` times
    spread through the run (none: no peak). Ctrl-C keeps the groups finished so far, every result
    marked `interrupted`."""
    from .machine_peak import best_of_peaks

    directories = [Path(d) for d in directories]
    results: dict[Path, dict] = {}
    groups: OrderedDict[tuple, list[tuple[Path, Job]]] = OrderedDict()
    for directory in directories:
        jobs, _ = artifact_dir_jobs(directory, settings, runtimes)
        others = [os.path.abspath(d) for d in directories if d != directory]
        results[directory] = new_result(
            {"kind": "artifacts", "path": os.path.abspath(directory)},
            settings.result_settings(warmup, runs, 0.0, ["component"]) | {
                "alternation": ALTERNATION, "alternated_with_directories": others,
                "machine_peak_probes": probes if probe else 0})
        for job in jobs:
            groups.setdefault((job.component, job.runtime, job.resolution, job.batch), []).append((directory, job))
    readings, measured = [], []
    # probe k of n goes before group round(k * groups / (n - 1)): the first before any, the last after all
    probe_at = sorted({round(k * len(groups) / max(1, probes - 1)) for k in range(probes)}) if probe else []
    try:
        for index, members in enumerate([*groups.values(), None]):
            if index in probe_at:
                with progress.item("machine peak (GEMM fp32 / int8)", None):
                    readings.append(probe())
            if members is not None:
                measured += _time_group(members, warmup, runs, progress)
    except KeyboardInterrupt:
        for result in results.values():
            result["interrupted"] = True
        progress.note("interrupted; keeping the groups measured so far")
    peak = best_of_peaks(readings) if readings else None
    for result in results.values():
        result["machine_peak"] = peak
    for directory, job, timing, init, rivals in measured:
        add_item(results[directory], make_item(
            name=job.name, level="component", component=job.component, runtime=job.runtime,
            precision=job.precision, threads=settings.threads, timing=timing, gflops=job.gflops, peak=peak,
            resolution=job.resolution, batch=job.batch, **job.extra, **init, alternated_with=rivals))
    return results


def _time_group(members: list[tuple[Path, Job]], warmup: int, runs: int, progress: BenchProgress) -> list[tuple]:
    """(directory, job, timing, init fields, rivals) per member."""
    label = " | ".join(f"{directory.name}:{job.name}" for directory, job in members)
    loaded = []  # (runner, feeds, timing, init fields) per member
    with progress.item(label, len(members) * (warmup + runs)) as tick:
        for directory, job in members:
            before = before_timed_load({job.component: job.cached_load}) if job.cached_load else None
            start = time.perf_counter()
            runner = job.load()
            init_ms = _ms_since(start)
            init = init_fields(before, {job.component: runner}, init_ms) if before is not None else {}
            feeds = job.feeds(runner)
            first_ms, _, _ = time_calls(lambda: runner.run(feeds), warmup, 0, tick=tick)  # first call, warm-up
            loaded.append((runner, feeds, Timing(init_ms, first_ms), init))
        for _ in range(runs):
            for runner, feeds, timing, _ in loaded:
                start = time.perf_counter()
                runner.run(feeds)
                timing.samples_ms.append(_ms_since(start))
                tick()
    names = [f"{directory.name}/{job.extra.get('file')}" for directory, job in members]
    measured = [(directory, job, timing, init, names[:index] + names[index + 1:])
                for index, ((directory, job), (_, _, timing, init)) in enumerate(zip(members, loaded))]
    loaded.clear()  # the group's runners go before the next group loads
    return measured
