"""ONNX recipes, all through onnxruntime.quantization (and its fp16 converter).

- onnx-dynamic-int8: int8 weights, activations quantized at run time per tensor. No calibration.
  Pick it when you have no calibration data; it speeds MatMul-heavy graphs (text encoder) most.
- onnx-static-int8: QDQ, int8 per-channel weights + int8 activations with ranges calibrated on
  real sampler inputs (W8A8). The fastest CPU recipe (VNNI); the one that needs the fallback loop.
- onnx-w8a16: QDQ, int8 weights + int16 activations (com.microsoft Q/DQ): near-fp quality where
  int8 activations lose too much, at int8 weight size.
- onnx-fp16: fp16 weights and compute, fp32 I/O; nodes whose values overflow fp16 on the scanned
  inputs (calibration, else the export's reference inputs) stay fp32.

Why the TorchScript-exported graph: quantize_static failed to calibrate the dynamo exporter's
GroupNorm (DESIGN.md section 3).
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

from ..export import onnx as onnx_backend
from ..export.quiet import quiet


STATIC_OP_TYPES = ("Conv", "MatMul", "Gemm", "Gather")  # Gather: the token embedding, a text encoder's largest tensor


class FeedReader:
    """onnxruntime's CalibrationDataReader over a list of feed dicts."""

    def __init__(self, feeds: list[dict[str, np.ndarray]]):
        self._feeds = feeds
        self._iter = iter(feeds)

    def get_next(self):
        return next(self._iter, None)

    def rewind(self):
        self._iter = iter(self._feeds)


def preprocess(fp32_path: Path, work: Path) -> Path:
    """Shape inference + graph optimisation that static quantization expects (quant_pre_process)."""
    from onnxruntime.quantization.shape_inference import quant_pre_process

    out = work / "preprocessed.onnx"
    with quiet():
        quant_pre_process(str(fp32_path), str(out), skip_symbolic_shape=True)
    return out


def dynamic_int8(fp32_path: Path, out: Path, feeds=None, nodes_to_exclude=None) -> Path:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    with quiet():
        quantize_dynamic(str(fp32_path), str(out), weight_type=QuantType.QInt8, per_channel=True,
                         nodes_to_exclude=nodes_to_exclude or [])
    return out


def static_int8(fp32_path: Path, out: Path, feeds, nodes_to_exclude=None, cache: Path | None = None,
                activation_type: str = "int8", preprocessed: bool = False) -> Path:
    """`preprocessed`: `fp32_path` already went through `preprocess` (node names in
    `nodes_to_exclude` must be the preprocessed graph's)."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    activation = {"int8": QuantType.QInt8, "int16": QuantType.QInt16}[activation_type]
    # The compute-heavy ops (and embeddings) only: the same accuracy as quantizing every op on the tiny UNet
    # (19-26 dB either way), a smaller file, and about half the time in onnxruntime's QDQ pass,
    # which grows quadratically with the number of Q/DQ pairs it inserts.
    extra = {"ActivationSymmetric": activation_type == "int8", "WeightSymmetric": True}
    if activation_type == "int16":
        extra["UseQDQContribOps"] = True  # int16 Q/DQ are com.microsoft ops in onnxruntime
    with tempfile.TemporaryDirectory() as work, quiet():
        model = fp32_path if preprocessed else preprocess(fp32_path, Path(work))
        quantize_static(str(model), str(out), FeedReader(feeds) if feeds is not None else None,
                        quant_format=QuantFormat.QDQ, per_channel=True, activation_type=activation,
                        op_types_to_quantize=list(STATIC_OP_TYPES),
                        weight_type=QuantType.QInt8, nodes_to_exclude=nodes_to_exclude or [],
                        calibrate_method=CalibrationMethod.MinMax, extra_options=extra,
                        calibration_cache_path=str(cache) if cache else None)
    return out


def w8a16(fp32_path: Path, out: Path, feeds, nodes_to_exclude=None, cache: Path | None = None,
          preprocessed: bool = False) -> Path:
    return static_int8(fp32_path, out, feeds, nodes_to_exclude, cache, "int16", preprocessed)


def fp16(fp32_path: Path, out: Path, feeds=None, nodes_to_exclude=None):
    """Returns the fp16 overflow scan over `feeds` (the nodes kept fp32 and why)."""
    return onnx_backend.to_fp16(fp32_path, out, node_block_list=nodes_to_exclude, scan_feeds=feeds)
