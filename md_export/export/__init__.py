"""Export to ONNX, Core ML and LiteRT: one module per backend, one driver, one manifest.

    from md_export.export import export
    export(my_module, {"x": torch.randn(1, 3, 64, 64)}, formats=["onnx", "tflite"], out_dir="out")
"""

from .driver import export, export_targets
from .presets import export_preset
from .types import FORMATS, PRECISIONS, ExportError, ExportTarget, Tolerance

__all__ = ["FORMATS", "PRECISIONS", "ExportError", "ExportTarget", "Tolerance", "export", "export_preset",
           "export_targets"]
