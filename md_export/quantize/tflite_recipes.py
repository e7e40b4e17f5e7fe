"""LiteRT recipes through AI Edge Quantizer, applied to the fp32 .tflite (every signature at once).

- tflite-fp16: fp16 weights, dequantized at load. Half the size, near-fp32 output.
- tflite-dynamic-int8: int8 channelwise weights, activations quantized on the fly (XNNPACK
  dynamic-range kernels). No calibration; the usual first try on phones.
- tflite-weight-only-int8: int8 weights, dequantized before fp32 compute: 4x smaller, fp32 speed.
- tflite-weight-only-int4: int4 channelwise weights, fp32 compute: for download size.
- tflite-dynamic-int4-blockwise: int4 blockwise-32 weights on fully-connected layers, dynamic-range.
- tflite-static-int8: int8 weights and activations (W8A8) with ranges calibrated on real sampler
  inputs: the NPU/DSP path (NNAPI, Hexagon) and the fastest CPU path.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..export.quiet import quiet
from ..export.tflite import fp16_recipe


def _weight_config(mode: str, bits: int, granularity: str):
    from ai_edge_quantizer import qtyping, recipe_manager

    manager = recipe_manager.RecipeManager()
    add = manager.add_weight_only_config if mode == "weight_only" else manager.add_dynamic_config
    add(regex=".*", operation_name=qtyping.TFLOperationName.ALL_SUPPORTED, num_bits=bits,
        granularity=getattr(qtyping.QuantGranularity, granularity))
    return manager.get_quantization_recipe()


def recipe_for(name: str):
    from ai_edge_quantizer import recipe

    return {
        "fp16": fp16_recipe,
        "dynamic_int8": recipe.dynamic_wi8_afp32,
        "weight_only_int8": lambda: _weight_config("weight_only", 8, "CHANNELWISE"),
        # AEQ 0.10's policy has no blockwise weight-only int4 (it silently quantizes nothing):
        # channelwise here, blockwise through the dynamic recipe below.
        "weight_only_int4": lambda: _weight_config("weight_only", 4, "CHANNELWISE"),
        "dynamic_int4": lambda: _weight_config("dynamic", 4, "BLOCKWISE_32"),
        "static_int8": recipe.static_wi8_ai8,
    }[name]()


def quantize(kind: str, fp32_path: Path, out: Path,
             signature_feeds: dict[str, list[dict[str, np.ndarray]]] | None = None) -> Path:
    """`signature_feeds`: per signature, calibration feeds keyed by the signature's input names."""
    from ai_edge_quantizer import quantizer

    with quiet():
        engine = quantizer.Quantizer(str(fp32_path), recipe_for(kind))
        calibration = None
        if engine.need_calibration:
            if not signature_feeds:
                raise ValueError(f"tflite-{kind} needs calibration data (--calibration DIR)")
            calibration = engine.calibrate(signature_feeds)
        result = engine.quantize(calibration) if calibration is not None else engine.quantize()
        result.export_model(str(out), overwrite=True)
    return out
