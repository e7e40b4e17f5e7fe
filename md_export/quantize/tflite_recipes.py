"""LiteRT recipes through AI Edge Quantizer, applied to the fp32 .tflite (every signature at once).

- tflite-fp16: fp16 weights, dequantized at load. Half the size, near-fp32 output.
- tflite-dynamic-int8: int8 channelwise weights, activations quantized on the fly (XNNPACK
  dynamic-range kernels). No calibration; the usual first try on phones. Depthwise convs stay
  float (see DYNAMIC_FLOAT_OPS).
- tflite-weight-only-int8: int8 weights, dequantized before fp32 compute: 4x smaller, fp32 speed.
- tflite-weight-only-int4: int4 channelwise weights, fp32 compute: for download size.
- tflite-dynamic-int4-blockwise: int4 blockwise-32 weights on fully-connected layers, dynamic-range.
- tflite-static-int8: int8 weights and activations (W8A8) with ranges calibrated on real sampler
  inputs, on the compute ops (convs, fully-connected, batch matmuls); norms, softmax, activations
  and elementwise ops stay float. The CPU (XNNPACK) path, and the ONNX static recipe's choice too.
- tflite-static-int8-full: every op AI Edge Quantizer supports in int8 (int8 I/O inside the
  graph): what full-integer NPU/DSP delegates need. On the trained mobilediffusion-micro weights
  it missed the gate on every network (real inputs: text encoder 16.3 dB, UNet 18.7 dB, decoder
  19.5 dB; the compute-ops recipe: 50.4, 28.8, 31.8 dB): LayerNorm, GroupNorm and softmax in int8
  lose too much. Check it on the target's own runtime before shipping it.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ..export.quiet import quiet
from ..export.tflite import fp16_recipe


def _weight_config(mode: str, bits: int, granularity: str, float_ops: tuple[str, ...] = ()):
    """`float_ops`: TFLite op names left unquantized (a later rule overrides the catch-all one)."""
    from ai_edge_quantizer import algorithm_manager, qtyping, recipe_manager

    manager = recipe_manager.RecipeManager()
    add = manager.add_weight_only_config if mode == "weight_only" else manager.add_dynamic_config
    add(regex=".*", operation_name=qtyping.TFLOperationName.ALL_SUPPORTED, num_bits=bits,
        granularity=getattr(qtyping.QuantGranularity, granularity))
    for op in float_ops:
        manager.add_quantization_config(regex=".*", operation_name=getattr(qtyping.TFLOperationName, op),
                                        algorithm_key=algorithm_manager.AlgorithmName.NO_QUANTIZE)
    return manager.get_quantization_recipe()


# XNNPACK has no dynamic-range (QD8) depthwise conv: an int8-weight DEPTHWISE_CONV_2D leaves the
# delegate for TFLite's builtin hybrid kernel, on phones as on hosts. Float, XNNPACK runs it. The
# mobilediffusion UNet at 512 on the 2-core Xeon: its 18 depthwise convs took 25.4 ms a call as
# builtins and 2.3 ms in XNNPACK fp32; the UNet 299.1 -> 275.9 ms (1.08x), 47.5 -> 47.7 dB against
# fp32 on the same input, 0.3 MB larger (depthwise weights are small).
DYNAMIC_FLOAT_OPS = ("DEPTHWISE_CONV_2D",)


# Where the FLOPs are: the ops static int8 pays on. The rest stays float (see the module docstring).
STATIC_COMPUTE_OPS = ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "BATCH_MATMUL")


def _static_compute_config():
    from ai_edge_quantizer import qtyping, recipe_manager

    manager = recipe_manager.RecipeManager()
    for op in STATIC_COMPUTE_OPS:
        manager.add_static_config(regex=".*", operation_name=getattr(qtyping.TFLOperationName, op),
                                  activation_num_bits=8, weight_num_bits=8)
    return manager.get_quantization_recipe()


def recipe_for(name: str):
    from ai_edge_quantizer import recipe

    return {
        "fp16": fp16_recipe,
        "dynamic_int8": lambda: _weight_config("dynamic", 8, "CHANNELWISE", DYNAMIC_FLOAT_OPS),
        "weight_only_int8": lambda: _weight_config("weight_only", 8, "CHANNELWISE"),
        # AEQ 0.10's policy has no blockwise weight-only int4 (it silently quantizes nothing):
        # channelwise here, blockwise through the dynamic recipe below.
        "weight_only_int4": lambda: _weight_config("weight_only", 4, "CHANNELWISE"),
        "dynamic_int4": lambda: _weight_config("dynamic", 4, "BLOCKWISE_32"),
        "static_int8": _static_compute_config,
        "static_int8_full": recipe.static_wi8_ai8,
    }[name]()


def quantize(kind: str, fp32_path: Path, out: Path,
             signature_feeds: dict[str, list[dict[str, np.ndarray]]] | None = None) -> Path:
    """`signature_feeds`: per signature, calibration feeds keyed by the signature's input names."""
    from ai_edge_quantizer import calibrator, quantizer

    with quiet():
        engine = quantizer.Quantizer(str(fp32_path), recipe_for(kind))
        calibration = None
        if engine.need_calibration:
            if not signature_feeds:
                raise ValueError(f"tflite-{kind} needs calibration data (--calibration DIR)")
            # Profiler-based: TFLite's C++ interpreter tracks each tensor's min/max as it runs.
            # AEQ's default mode keeps every intermediate tensor alive for Python to read; on the
            # mobilediffusion decoder at 512 that was killed by the OOM killer on a 24 GB host.
            calibration = engine.calibrate(signature_feeds, num_threads=os.cpu_count() or 1,
                                           mode=calibrator.CalibrationMode.CALIBRATION_PROFILER_BASED)
        result = engine.quantize(calibration) if calibration is not None else engine.quantize()
        result.export_model(str(out), overwrite=True)
    return out
