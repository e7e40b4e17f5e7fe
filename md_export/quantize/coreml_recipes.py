"""Core ML recipes through coremltools.optimize.coreml, applied to the saved .mlpackage (on Linux).

- coreml-linear-int8: int8 per-channel linear weights (W8, fp16 compute): 2x smaller than fp16.
- coreml-palettize-6bit / -4bit: k-means weight palettes per tensor (Apple's SD recipe uses 6 bit):
  2.7x / 4x smaller than fp16; decompressed on load, Neural Engine friendly.
Compression happens on the package, so the result validates here and runs only on macOS.
coreml-w8a8 (int8 activations too) needs calibration in PyTorch instead: coreml_w8a8.py.
"""

from __future__ import annotations

from pathlib import Path

from ..export.coreml import make_reproducible
from ..export.quiet import quiet


def compress(kind: str, package: Path, out: Path) -> Path:
    with quiet():
        import coremltools as ct
        import coremltools.optimize.coreml as cto

        model = ct.models.MLModel(str(package), skip_model_load=True)
        if kind == "linear_int8":
            config = cto.OptimizationConfig(global_config=cto.OpLinearQuantizerConfig(
                mode="linear_symmetric", dtype="int8", granularity="per_channel"))
            compressed = cto.linear_quantize_weights(model, config)
        elif kind in ("palettize_6bit", "palettize_4bit"):
            bits = 6 if kind == "palettize_6bit" else 4
            config = cto.OptimizationConfig(global_config=cto.OpPalettizerConfig(mode="kmeans", nbits=bits))
            compressed = cto.palettize_weights(model, config)
        else:
            raise ValueError(f"unknown Core ML recipe {kind!r}")
        compressed.save(str(out))
    make_reproducible(out)
    return out
