"""The named recipes, one place: what each does, what it needs, and the parity gate it must pass.

Tolerances are tensor-level gates on the artifact's output against its fp32 reference (seeded
inputs and real calibration inputs). They are what int8 can honestly promise on a diffusion
network; the image-level gate (final-image PSNR, `md-export parity --pipeline`) is separate.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..export.types import Tolerance, ToleranceTable


@dataclass(frozen=True)
class Recipe:
    name: str  # the CLI name: FORMAT-KIND
    format: str  # onnx | tflite | coreml
    kind: str  # the backend's recipe key
    label: str  # the manifest's "precision" for artifacts it makes
    calibration: bool  # needs --calibration
    summary: str  # one line for --help
    tolerances: ToleranceTable
    fallback: bool = False  # supports --target-psnr (sensitivity-ranked float fallback)


_INT8_ACTIVATIONS = ToleranceTable({
    # W8A8 on a diffusion UNet: ~20-30 dB per call is typical before fallback; below 15 dB the
    # sampler diverges. Text encoder and decoder tolerate int8 activations better.
    ("*", "int8"): Tolerance(min_psnr_db=15.0, min_cosine=0.95),
    ("text_encoder", "int8"): Tolerance(min_psnr_db=25.0, min_cosine=0.99),
})
# Weights only (activations stay float): only rounding of weights, measured 48-58 dB on tiny presets.
_INT8_WEIGHTS = ToleranceTable({("*", "int8"): Tolerance(min_psnr_db=40.0, min_cosine=0.999)})
# Dynamic range: activations quantized per call at run time, measured 33-57 dB. The VAE decoder's
# 3x3 convs (onnxruntime ConvInteger, per-tensor uint8 activations) set the cosine floor: 0.970 on
# real decoder latents of a tiny preset, while its PSNR stayed at 33 dB.
_INT8_DYNAMIC = ToleranceTable({("*", "int8"): Tolerance(min_psnr_db=30.0, min_cosine=0.98),
                                ("vae_decoder", "int8"): Tolerance(min_psnr_db=30.0, min_cosine=0.95)})
# int4: 16 levels per channel. LiteRT CONV_2D with int4 channelwise weights on the VAE decoder's
# convs measured cosine 0.88 on real latents (tiny preset): the decoder gets its own floor.
_INT4_WEIGHTS = ToleranceTable({("*", "int4"): Tolerance(min_psnr_db=18.0, min_cosine=0.98),
                                ("vae_decoder", "int4"): Tolerance(min_psnr_db=18.0, min_cosine=0.85)})
_WIDE = ToleranceTable({("*", "w8a16"): Tolerance(min_psnr_db=35.0, min_cosine=0.999),
                        ("*", "fp16"): Tolerance(min_psnr_db=35.0, min_cosine=0.999)})


def _table(table: ToleranceTable, label: str) -> ToleranceTable:
    """Re-key a table on the recipe's manifest label."""
    return ToleranceTable({(c, label): t for (c, _), t in table.entries.items()})


RECIPES: dict[str, Recipe] = {r.name: r for r in [
    Recipe("onnx-dynamic-int8", "onnx", "dynamic_int8", "int8-dynamic", False,
           "int8 weights, activations quantized at run time; no calibration", _table(_INT8_DYNAMIC, "int8-dynamic")),
    Recipe("onnx-static-int8", "onnx", "static_int8", "int8-static", True,
           "QDQ W8A8: int8 per-channel weights, uint8 calibrated activations (the layout onnxruntime's CPU "
           "kernels fuse); fastest on CPU; --target-psnr fallback",
           _table(_INT8_ACTIVATIONS, "int8-static"), fallback=True),
    # Signed symmetric activations: what NPU delegates (QNN HTP and others) take. Not for x86
    # onnxruntime, where Convs after a ReLU stay unfused and the artifact runs slower than fp32.
    Recipe("onnx-static-int8-symmetric", "onnx", "static_int8_symmetric", "int8-static-s8", True,
           "QDQ W8A8 with signed symmetric int8 activations, for NPU targets (QNN); slow on x86 CPUs",
           _table(_INT8_ACTIVATIONS, "int8-static-s8"), fallback=True),
    Recipe("onnx-w8a16", "onnx", "w8a16", "w8a16", True,
           "QDQ int8 weights + int16 activations; near-fp quality at int8 weight size", _table(_WIDE, "w8a16")),
    Recipe("onnx-fp16", "onnx", "fp16", "fp16", False, "fp16 weights and compute, fp32 I/O; fp16 overflow check",
           _table(_WIDE, "fp16")),
    Recipe("tflite-fp16", "tflite", "fp16", "fp16", False, "fp16 weights, fp32 compute", _table(_WIDE, "fp16")),
    Recipe("tflite-dynamic-int8", "tflite", "dynamic_int8", "int8-dynamic", False,
           "int8 channelwise weights, dynamic-range activations (XNNPACK)", _table(_INT8_DYNAMIC, "int8-dynamic")),
    Recipe("tflite-weight-only-int8", "tflite", "weight_only_int8", "int8-weights", False,
           "int8 weights dequantized to fp32 compute: 4x smaller, fp32 numerics", _table(_INT8_WEIGHTS, "int8-weights")),
    Recipe("tflite-weight-only-int4", "tflite", "weight_only_int4", "int4-weights", False,
           "int4 channelwise weights, fp32 compute: for download size", _table(_INT4_WEIGHTS, "int4-weights")),
    Recipe("tflite-dynamic-int4-blockwise", "tflite", "dynamic_int4", "int4-blockwise", False,
           "int4 blockwise-32 weights on fully-connected layers (AEQ allows blockwise only there)",
           _table(_INT4_WEIGHTS, "int4-blockwise")),
    Recipe("tflite-static-int8", "tflite", "static_int8", "int8-static", True,
           "W8A8 with calibrated activations on convs / fully-connected / batch matmuls, the rest float "
           "(XNNPACK CPU path)", _table(_INT8_ACTIVATIONS, "int8-static")),
    # Every supported op in int8, for full-integer delegates (NNAPI, Hexagon, Edge TPU-like NPUs).
    # Its own label: the artifact differs from tflite-static-int8's, and both can sit in one folder.
    Recipe("tflite-static-int8-full", "tflite", "static_int8_full", "int8-static-full", True,
           "full integer W8A8 (every supported op int8) for NPU/DSP delegates; loses the most accuracy",
           _table(_INT8_ACTIVATIONS, "int8-static-full")),
    Recipe("coreml-linear-int8", "coreml", "linear_int8", "int8-weights", False,
           "int8 per-channel linear weights (coremltools.optimize.coreml)", _table(_INT8_WEIGHTS, "int8-weights")),
    Recipe("coreml-palettize-6bit", "coreml", "palettize_6bit", "palettized-6bit", False,
           "6-bit k-means palettes (Apple's Stable Diffusion recipe)",
           ToleranceTable({("*", "palettized-6bit"): Tolerance(min_psnr_db=25.0, min_cosine=0.995)})),
    Recipe("coreml-palettize-4bit", "coreml", "palettize_4bit", "palettized-4bit", False,
           "4-bit k-means palettes: smallest Core ML weights",
           ToleranceTable({("*", "palettized-4bit"): Tolerance(min_psnr_db=18.0, min_cosine=0.98)})),
    # Calibrated on the PyTorch module (rebuilt from the export manifest's source) with
    # coremltools.optimize.torch LinearQuantizer, then converted like the export (coreml_w8a8.py has
    # the route and what failed). Off macOS the gate applies to the fake-quantized torch model (the
    # package's int8 weights and activation quantization points), recorded in the manifest.
    Recipe("coreml-w8a8", "coreml", "w8a8", "int8-w8a8", True,
           "int8 weights + int8 activations calibrated on the PyTorch module (A17 Pro/M4 int8 ANE)",
           _table(_INT8_ACTIVATIONS, "int8-w8a8")),
]}


def recipe_help() -> str:
    lines = []
    for fmt in ("onnx", "tflite", "coreml"):
        lines.append(f"{fmt}:")
        lines += [f"  {r.name:<30} {r.summary}" + (" [needs --calibration]" if r.calibration else "")
                  for r in RECIPES.values() if r.format == fmt]
    return "\n".join(lines)


def get_recipe(name: str) -> Recipe:
    if name not in RECIPES:
        from ..errors import BadArgumentError

        raise BadArgumentError(f"unknown recipe {name!r}; known: {', '.join(RECIPES)}")
    return RECIPES[name]
