"""LiteRT export: litert-torch converts, ai-edge-quantizer casts weights to fp16.

Multi-resolution: one `.tflite` file with one signature per resolution (`unet_512`, `unet_768`);
litert-torch shares the weights between signatures. Token ids: LiteRT has no int64 kernels on
phones, the converter makes `input_ids` int32 and the runner casts.
"""

from __future__ import annotations

import inspect
from pathlib import Path

from .quiet import quiet
from .types import ExportError, ExportTarget, Tolerance, ToleranceTable

TOLERANCES = ToleranceTable({
    ("*", "fp32"): Tolerance(min_psnr_db=60.0, min_cosine=0.99999, max_abs_rel=1e-3),
    # fp16 weights, fp32 compute (the interpreter dequantizes): only weight rounding error
    ("*", "fp16"): Tolerance(min_psnr_db=40.0, min_cosine=0.9999),
})


def fp16_recipe():
    from ai_edge_quantizer import qtyping, recipe_manager

    manager = recipe_manager.RecipeManager()
    manager.add_quantization_config(
        regex=".*",
        operation_name=qtyping.TFLOperationName.ALL_SUPPORTED,
        op_config=qtyping.OpQuantizationConfig(
            weight_tensor_config=qtyping.TensorQuantizationConfig(num_bits=16, dtype=qtyping.TensorDataType.FLOAT),
            compute_precision=qtyping.ComputePrecision.FLOAT,
            explicit_dequantize=True,
        ),
        algorithm_key="float_casting",
    )
    return manager.get_quantization_recipe()


def _names_match_forward(target: ExportTarget) -> bool:
    parameters = list(inspect.signature(target.module.forward).parameters)
    return parameters[: len(target.sample_inputs)] == list(target.sample_inputs)


def _by_index(names: list[str]) -> list[str]:
    """args_10 after args_9: the converter numbers positional tensors, the listing sorts them as text."""
    return sorted(names, key=lambda n: (len(n), n))


def runtime_names(path: Path, signature: str, target: ExportTarget) -> dict[str, str]:
    """Our tensor name -> the signature's. Inputs keep our names when they were passed by keyword;
    positional inputs are args_0.. and outputs output_0.., in forward()'s order."""
    from ai_edge_litert.interpreter import Interpreter

    listing = Interpreter(model_path=str(path)).get_signature_list()[signature]
    inputs, outputs = list(listing["inputs"]), _by_index(list(listing["outputs"]))
    if set(inputs) == set(target.sample_inputs):
        names = {name: name for name in target.sample_inputs}
    else:
        names = dict(zip(target.sample_inputs, _by_index(inputs)))
    return names | dict(zip(target.output_names, outputs))


def convert(targets: list[ExportTarget], path: Path) -> dict[str, str]:
    """Convert one network at one or more shapes into one fp32 file. Returns target tag -> signature."""
    import litert_torch

    try:
        with quiet():
            converter = None
            for target in targets:
                add = litert_torch.signature if converter is None else converter.signature
                if _names_match_forward(target):  # signature inputs then carry the manifest's names
                    converter = add(target.tag, target.module, sample_kwargs=dict(target.sample_inputs))
                else:
                    converter = add(target.tag, target.module, sample_args=target.args())
            converter.convert().export(str(path))
    except Exception as exc:
        raise ExportError(f"tflite export of {targets[0].component} failed: {str(exc).splitlines()[0]}") from exc
    return {target.tag: target.tag for target in targets}


def to_fp16(fp32_path: Path, path: Path) -> Path:
    """fp16 weights, dequantized to fp32 at load (TFLite's float16 quantization)."""
    from ai_edge_quantizer import quantizer

    try:
        with quiet():
            result = quantizer.Quantizer(str(fp32_path), fp16_recipe()).quantize()
            result.export_model(str(path), overwrite=True)
    except Exception as exc:
        raise ExportError(f"tflite fp16 conversion of {fp32_path.name} failed: {str(exc).splitlines()[0]}") from exc
    return path
