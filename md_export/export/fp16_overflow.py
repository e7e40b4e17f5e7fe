"""fp16 overflow check: which nodes of an fp32 ONNX graph produce values half precision cannot hold.

    fp32 model ──(+ Abs -> ReduceMax per float tensor, as extra scalar outputs)──> onnxruntime on feeds
        ──> |max| per tensor ──> tensors above FP16_SAFE_MAX ──> their producers and consumers stay fp32

A trained network's activations (the residual stream of a deep transformer stack, an un-normalised
decoder) can exceed 65504, the largest fp16; cast to fp16 they become inf and the picture NaN. The
scan is one fp32 run with a scalar per tensor (not the tensors themselves, which for a UNet would
be gigabytes). Both sides of an overflowing edge stay fp32: the producer computes it, the consumer
would otherwise receive it through a Cast to fp16.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

FP16_MAX = 65504.0
# Headroom below the fp16 maximum: other inputs than the scanned ones, and fp16 accumulation inside
# a node, go a little beyond what fp32 showed on the feeds.
FP16_SAFE_MAX = FP16_MAX / 4
_ABSMAX_SUFFIX = "__fp16_scan_absmax"


@dataclass
class OverflowScan:
    threshold: float
    tensors: dict[str, float] = field(default_factory=dict)  # overflowing tensor -> largest |value| seen
    blocked_nodes: list[str] = field(default_factory=list)  # node names to keep in fp32

    def as_dict(self) -> dict:
        return {"threshold": self.threshold, "overflowing_tensors": {k: float(v) for k, v in self.tensors.items()},
                "fp32_nodes": list(self.blocked_nodes)}


def scan(fp32_path: Path, feeds: list[dict[str, np.ndarray]], threshold: float = FP16_SAFE_MAX) -> OverflowScan:
    """Run the fp32 graph on `feeds` and name the nodes whose float outputs exceed `threshold`."""
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper

    model = onnx.load(str(fp32_path))
    float_tensors = _float_tensors(fp32_path, model)
    graph = model.graph
    original_nodes = list(graph.node)  # before the probes go in
    probed = []
    for tensor in float_tensors:
        absolute = tensor + "__fp16_scan_abs"
        graph.node.append(helper.make_node("Abs", [tensor], [absolute], name=absolute))
        graph.node.append(helper.make_node("ReduceMax", [absolute], [tensor + _ABSMAX_SUFFIX], keepdims=0,
                                           name=tensor + _ABSMAX_SUFFIX))
        graph.output.append(helper.make_tensor_value_info(tensor + _ABSMAX_SUFFIX, TensorProto.FLOAT, []))
        probed.append(tensor)
    with tempfile.TemporaryDirectory() as work:
        probe = Path(work) / "scan.onnx"
        onnx.save_model(model, str(probe), save_as_external_data=True, all_tensors_to_one_file=True,
                        location="scan.onnx.data")
        session = ort.InferenceSession(str(probe), providers=["CPUExecutionProvider"])
        names = [t + _ABSMAX_SUFFIX for t in probed]
        largest = np.zeros(len(probed))
        for feed in feeds:
            values = session.run(names, feed)
            # inf/NaN in fp32 already: treat as overflowing (the fp16 graph can only be worse)
            largest = np.maximum(largest, [np.inf if not np.isfinite(v) else float(v) for v in values])
    result = OverflowScan(threshold)
    result.tensors = {t: float(v) for t, v in zip(probed, largest) if v > threshold}
    blocked = []
    for node in original_nodes:
        if any(name in result.tensors for name in list(node.input) + list(node.output)):
            blocked.append(node.name)
    result.blocked_nodes = blocked
    return result


def _float_tensors(fp32_path: Path, model) -> list[str]:
    """Every float32 tensor a node produces (graph outputs included), by shape inference."""
    import onnx
    from onnx import TensorProto

    with tempfile.TemporaryDirectory() as work:
        inferred_path = Path(work) / "inferred.onnx"
        onnx.shape_inference.infer_shapes_path(str(fp32_path), str(inferred_path))  # works past 2 GB
        inferred = onnx.load(str(inferred_path), load_external_data=False)
    types = {v.name: v.type.tensor_type.elem_type
             for v in list(inferred.graph.value_info) + list(inferred.graph.output) + list(inferred.graph.input)}
    produced = []
    for node in model.graph.node:
        if not node.name:
            raise ValueError(f"fp16 overflow scan needs named nodes; a {node.op_type} node has none")
        for output in node.output:
            if output and types.get(output) == TensorProto.FLOAT:
                produced.append(output)
    return produced


def check_finite(fp16_path: Path, feeds: list[dict[str, np.ndarray]]) -> None:
    """The converted model's outputs on the scanned feeds hold no inf/NaN (else: name them)."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(fp16_path), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    for index, feed in enumerate(feeds):
        for name, value in zip(names, session.run(names, feed)):
            if not np.all(np.isfinite(value)):
                raise FloatingPointError(f"fp16 model {fp16_path.name}: output {name!r} has inf/NaN on scan input "
                                         f"{index} even with the overflowing nodes kept fp32")
