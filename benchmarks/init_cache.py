"""Init time with and without onnxruntime's optimized-graph cache, measured in the same run.

For onnxruntime artifacts whose cache is on (md_export/runtimes/ort_cache.py), before the load
that the timed runs use:
1. a load without the cache: `init_ms_cold` (onnxruntime parses and optimizes the graph, as every
   load did before the cache);
2. where the cached graph is missing, a load that optimizes and writes it: `init_ms_cache_write`
   (once per artifact and host);
then the load the runs use opens the cached graph: `init_ms`, and `init_ms_cached` when every
network in it was a cache hit. Each extra load is dropped before the next (a full UNet holds GBs).
Cold and cached loads both read a file the OS has just had in memory (the artifact, the cache
file): their difference is the optimizer, not the disk. With the cache off or unusable the timed
load is the cold one: `init_ms_cold` = `init_ms`, `init_ms_cached` null.

Items of other runtimes carry none of these keys.
"""

from __future__ import annotations

import gc
import time
from dataclasses import dataclass
from functools import lru_cache
from typing import Callable

from md_export.runtimes.base import Runner
from md_export.runtimes.ort_cache import GraphCache


@dataclass
class CachedLoad:
    """One onnxruntime network: its cache plan and how to load it with and without the cache."""

    cache: GraphCache
    load_cached: Callable[[], Runner]
    load_uncached: Callable[[], Runner]


@lru_cache(maxsize=None)
def warm_onnxruntime() -> None:
    """Create one trivial session: the first session of a process also builds onnxruntime's
    environment (logging, thread pools), which would be counted in whichever load came first."""
    import onnxruntime as ort
    from onnx import TensorProto, helper

    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "warm",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    options = ort.SessionOptions()
    options.log_severity_level = 3
    ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])


def _drop(runners: list) -> None:
    runners.clear()
    gc.collect()


def before_timed_load(loads: dict[str, CachedLoad]) -> dict:
    """Steps 1 and 2 above for the networks of one item (one component, or a pipeline's three,
    timed together as their init is). Returns what `init_fields` needs."""
    active = {c: l for c, l in loads.items() if l.cache.file is not None}
    if not active:
        return {"cold_ms": None, "write_ms": None}
    warm_onnxruntime()
    held: list = []
    start = time.perf_counter()
    held += [load.load_uncached() for load in loads.values()]
    cold_ms = (time.perf_counter() - start) * 1e3
    _drop(held)
    missing = [c for c, l in active.items() if not l.cache.file.exists()]
    write_ms = None
    if missing:
        start = time.perf_counter()
        held += [active[c].load_cached() for c in missing]
        write_ms = (time.perf_counter() - start) * 1e3
        _drop(held)
    return {"cold_ms": cold_ms, "write_ms": write_ms}


def init_fields(before: dict, runners: dict[str, Runner], init_ms: float) -> dict:
    """The item's keys, given the loaded runners of the timed load and its init_ms."""
    statuses = {c: getattr(r, "cache_status", None) for c, r in runners.items()}
    statuses = {c: s for c, s in statuses.items() if s is not None}
    all_hits = bool(statuses) and all(s["state"] == "hit" for s in statuses.values())
    cold = before["cold_ms"] if before["cold_ms"] is not None else init_ms
    return {
        "init_ms_cold": round(cold, 3),
        "init_ms_cached": round(init_ms, 3) if all_hits else None,
        "init_ms_cache_write": round(before["write_ms"], 3) if before["write_ms"] is not None else None,
        "ort_cache": statuses,
    }
