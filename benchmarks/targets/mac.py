"""macOS: Core ML packages timed with coremltools (`MLModel.predict`) under a chosen compute-units
setting (CPU_ONLY / CPU_AND_GPU / CPU_AND_NE / ALL), through the same host harness and schema.

    md-export bench run --artifacts DIR --device mac --runtime coreml --compute-units CPU_AND_NE

`MLModel.predict` exists only on macOS: anywhere else this target refuses up front with a clear
error instead of failing inside coremltools.

iPhone: build the .mlpackage here, open it in Xcode (Xcode > Open Developer Tool > Core ML model
performance report, Xcode 14+), pick a connected iPhone and the compute units, and read the load /
prediction medians it reports; copy them into the same JSON schema by hand (device kind "ios").
"""

from __future__ import annotations

import platform
from pathlib import Path

from md_export.errors import MdExportError

COMPUTE_UNITS = ("ALL", "CPU_ONLY", "CPU_AND_GPU", "CPU_AND_NE")


class NeedsMacOSError(MdExportError):
    pass


def require_macos() -> None:
    if platform.system() != "Darwin":
        raise NeedsMacOSError(f"the mac target needs macOS: Core ML predictions run only there (this is "
                              f"{platform.system()}). Run `md-export bench run --device mac ...` on a Mac; "
                              "here, benchmark the .onnx / .tflite artifacts instead")


def coreml_runner(path: str | Path, compute_units: str = "ALL"):
    require_macos()
    if compute_units not in COMPUTE_UNITS:
        raise MdExportError(f"compute units {compute_units!r}: choose from {', '.join(COMPUTE_UNITS)}")
    from md_export.runtimes.coreml_runner import CoreMLRunner

    return CoreMLRunner(path, compute_units)
