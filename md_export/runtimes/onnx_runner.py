"""onnxruntime runner (CPU by default; the execution provider is a constructor argument).

With a `GraphCache` (see ort_cache.py) the session comes from onnxruntime's optimized graph cached
beside the artifact when there is one, and writes it when there is not; `cache_status` says which.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .base import ArtifactLoadError, Runner, TensorSpec
from .ort_cache import GraphCache, disabled, open_session

_ORT_DTYPES = {"tensor(float)": "float32", "tensor(float16)": "float16", "tensor(int64)": "int64",
               "tensor(int32)": "int32"}


class OnnxRunner(Runner):
    runtime = "onnxruntime"

    def __init__(self, path: str | Path, providers: tuple[str, ...] = ("CPUExecutionProvider",), threads: int = 0,
                 cache: GraphCache | None = None):
        """`cache`: plan it (`plan_graph_cache`) before timing a load; None loads without one."""
        import onnxruntime as ort

        def make_options(level: str):
            options = ort.SessionOptions()
            options.intra_op_num_threads = threads
            # 3 (errors): also keeps onnxruntime's "hardware specific optimizations" warning, which
            # the cache key answers, off stderr when a cache is written
            options.log_severity_level = 3
            options.graph_optimization_level = getattr(ort.GraphOptimizationLevel, level)
            # With the memory pattern on, onnxruntime plans one block per pattern from the first
            # call and allocates it on the second, whose fresh pages the call then faults in: the
            # 512 fp32 decoder after UNet calls in one process took 3398, 2450, 1443, 1451 ms for
            # its first four calls, against 2219, 1414, 1425, 1426 ms with it off; warm calls are
            # the same either way (decoder 1412 / 1419 ms, int8 UNet 337 / 343 ms, medians).
            # A pipeline runs its decoder once per picture, so its second picture paid the block.
            options.enable_mem_pattern = False
            return options

        try:
            self.session, self.cache_status = open_session(cache or disabled(path), make_options, tuple(providers))
        except Exception as exc:  # InvalidProtobuf, Fail, NoSuchFile...
            raise ArtifactLoadError(f"cannot load ONNX model {Path(path).name}: {str(exc).splitlines()[0]}") from None
        self._inputs = tuple(
            TensorSpec(i.name, tuple(d if isinstance(d, int) else -1 for d in i.shape), _ORT_DTYPES.get(i.type, i.type))
            for i in self.session.get_inputs()
        )
        self._outputs = tuple(o.name for o in self.session.get_outputs())

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        self.check_feeds(feeds)
        typed = {spec.name: np.ascontiguousarray(feeds[spec.name], dtype=spec.dtype) for spec in self._inputs}
        return dict(zip(self._outputs, self.session.run(list(self._outputs), typed)))
