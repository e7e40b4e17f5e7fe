"""Core ML runner: `MLModel.predict` exists only on macOS. Elsewhere this raises at load, saying so;
`md-export parity` then validates the package instead (spec, I/O, weights)."""

from __future__ import annotations

import platform
from pathlib import Path

import numpy as np

from .base import Runner, RuntimeUnavailableError, TensorSpec

COMPUTE_UNITS = ("ALL", "CPU_ONLY", "CPU_AND_GPU", "CPU_AND_NE")


def coreml_available() -> bool:
    return platform.system() == "Darwin"


class CoreMLRunner(Runner):
    runtime = "coreml"

    def __init__(self, path: str | Path, compute_units: str = "ALL"):
        if not coreml_available():
            raise RuntimeUnavailableError(
                f"Core ML needs macOS to run {Path(path).name} (this is {platform.system()}); "
                "on Linux md-export converts and validates packages but cannot execute them")
        import coremltools as ct

        self.model = ct.models.MLModel(str(path), compute_units=getattr(ct.ComputeUnit, compute_units))
        spec = self.model.get_spec()
        self._inputs = tuple(
            TensorSpec(i.name, tuple(int(d) for d in i.type.multiArrayType.shape),
                       "int32" if i.type.multiArrayType.dataType == ct.proto.FeatureTypes_pb2.ArrayFeatureType.INT32
                       else "float32")
            for i in spec.description.input)
        self._outputs = tuple(o.name for o in spec.description.output)

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        self.check_feeds(feeds)
        typed = {spec.name: np.ascontiguousarray(feeds[spec.name], dtype=spec.dtype) for spec in self._inputs}
        out = self.model.predict(typed)
        return {name: np.asarray(out[name], dtype=np.float32) for name in self._outputs}
