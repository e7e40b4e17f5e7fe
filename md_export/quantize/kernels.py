"""What the runtime really runs: quantized kernels vs float ops, counted in the graph the runtime
executes, not in the file we wrote.

    artifact ─> onnxruntime session (its full optimizer, optimized_model_filepath) ─> optimized graph
            ─> per compute class (Conv, MatMul, Gemm): quantized kernels / all kernels
            ─> Q/DQ nodes left (each one is memory traffic around a float op)
            ─> float islands: compute ops left in float, named by PyTorch module

    .tflite ─> LiteRT interpreter's op list ─> per builtin op: int8 inputs vs float inputs

A QDQ model that "quantized" every Conv in the file can still run most of them in float: the
runtime fuses DequantizeLinear -> Conv -> QuantizeLinear into QLinearConv only when the layout
matches its kernels (uint8 activations on x86). Counting in the optimized graph catches that.
"""

from __future__ import annotations

import re
import tempfile
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

COMPUTE_CLASSES = ("Conv", "MatMul", "Gemm")

# onnxruntime kernels that compute in integers, by the float op they replace.
_QUANTIZED_KERNELS = {
    "QLinearConv": "Conv", "ConvInteger": "Conv", "NhwcQLinearConv": "Conv",
    "QLinearMatMul": "MatMul", "MatMulInteger": "MatMul", "MatMulIntegerToFloat": "MatMul",
    "DynamicQuantizeMatMul": "MatMul", "MatMulNBits": "MatMul", "QAttention": "MatMul",
    "QGemm": "Gemm",
}
# Float kernels after onnxruntime's fusions (FusedConv = Conv+activation, NCHWc layout Conv, ...).
_FLOAT_KERNELS = {"Conv": "Conv", "FusedConv": "Conv", "ConvTranspose": "Conv",
                  "MatMul": "MatMul", "FusedMatMul": "MatMul", "Gemm": "Gemm", "FusedGemm": "Gemm"}
_QDQ = ("QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear")


# What onnxruntime's optimizers append to a node's name, after a slash, when they fuse or copy it
# ("/mid_attention/ff/proj/node_MatMul_162/MatMulAddFusion", ".../act/Mul/QuickGeluFusion",
# ".../Reshape_output_0_dq/duplicated_token_3"): not a module of the network.
_ORT_NAME_TAG = re.compile(r"(?:[A-Za-z]+Fusion|duplicated)(?:_token_\d+)?")


def module_name(node_name: str) -> str:
    """The PyTorch module path in a TorchScript-exported node name ("/up_blocks.0/resnets.1/conv1/Conv"
    -> "up_blocks.0.resnets.1.conv1"; "" when the node has none); onnxruntime keeps the name (or
    appends a tag to it, dropped here) when it fuses."""
    parts = [p for p in node_name.strip("/").split("/") if p]
    while len(parts) > 1 and _ORT_NAME_TAG.fullmatch(parts[-1]):
        parts.pop()
    return ".".join(parts[:-1])


def constant_names(graph) -> set[str]:
    """Tensors of an ONNX graph that are weights or constants, not computed from its inputs."""
    return {t.name for t in graph.initializer} | {n.output[0] for n in graph.node if n.op_type == "Constant"}


def multiplies_two_activations(node, constants: set[str]) -> bool:
    """A matmul whose two operands are both computed in the graph (attention's q k^T, weights x v)."""
    return not any(name in constants for name in node.input[:2])


def module_of(node_name: str) -> str:
    """`module_name`, with "(graph)" for nodes outside any submodule."""
    return module_name(node_name) or "(graph)"


@dataclass
class KernelReport:
    runtime: str
    quantized: dict[str, int] = field(default_factory=dict)  # compute class -> quantized kernels
    total: dict[str, int] = field(default_factory=dict)  # compute class -> all kernels of that class
    qdq_left: int = 0  # Quantize/DequantizeLinear nodes the runtime still executes
    op_counts: dict[str, int] = field(default_factory=dict)  # every op type in the executed graph
    float_islands: dict[str, list[str]] = field(default_factory=dict)  # compute class -> modules left float
    # float MatMuls of two computed operands (attention's products; onnx-static-int8 keeps them float)
    float_activation_products: int = 0

    def fully_quantized(self, classes: tuple[str, ...] = COMPUTE_CLASSES) -> bool:
        return all(self.quantized.get(c, 0) == self.total.get(c, 0) for c in classes)

    def summary(self) -> str:
        parts = [f"{c} {self.quantized.get(c, 0)}/{self.total[c]} quantized" if i == 0 else
                 f"{c} {self.quantized.get(c, 0)}/{self.total[c]}"
                 for i, c in enumerate(c for c in COMPUTE_CLASSES if self.total.get(c))]
        if self.float_activation_products:
            parts.append(f"{self.float_activation_products} float products of two activations")
        if self.runtime == "onnxruntime":
            parts.append(f"Q/DQ left {self.qdq_left}")
        return ", ".join(parts) or "no Conv/MatMul/Gemm"

    def as_dict(self) -> dict:
        return asdict(self)


def _islands(float_nodes: list[tuple[str, str]], limit: int = 20) -> dict[str, list[str]]:
    islands: dict[str, list[str]] = {}
    for cls, name in float_nodes:
        modules = islands.setdefault(cls, [])
        module = module_of(name)
        if module not in modules and len(modules) < limit:
            modules.append(module)
    return islands


def onnx_kernel_report(path: str | Path, threads: int = 1) -> KernelReport:
    """Optimize `path` the way an InferenceSession does on this host and count what it will run."""
    import onnx
    import onnxruntime as ort

    with tempfile.TemporaryDirectory() as work:
        optimized = Path(work) / "optimized.onnx"
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.optimized_model_filepath = str(optimized)
        options.intra_op_num_threads = threads
        options.log_severity_level = 3
        # Large models save their initializers beside the graph; only the nodes are read here.
        options.add_session_config_entry("session.optimized_model_external_initializers_file_name",
                                         "optimized.onnx.data")
        options.add_session_config_entry("session.optimized_model_external_initializers_min_size_in_bytes",
                                         "1024")
        ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        graph = onnx.load(str(optimized), load_external_data=False).graph
    report = KernelReport("onnxruntime")
    counts: Counter = Counter()
    float_nodes = []
    constants = constant_names(graph)
    for node in graph.node:
        counts[node.op_type] += 1
        if node.op_type in _QUANTIZED_KERNELS:
            cls = _QUANTIZED_KERNELS[node.op_type]
            report.quantized[cls] = report.quantized.get(cls, 0) + 1
            report.total[cls] = report.total.get(cls, 0) + 1
        elif node.op_type in _FLOAT_KERNELS:
            cls = _FLOAT_KERNELS[node.op_type]
            report.total[cls] = report.total.get(cls, 0) + 1
            float_nodes.append((cls, node.name))
            if cls == "MatMul" and multiplies_two_activations(node, constants):
                report.float_activation_products += 1
        elif node.op_type in _QDQ:
            report.qdq_left += 1
    report.op_counts = dict(sorted(counts.items()))
    report.float_islands = _islands(float_nodes)
    return report


# LiteRT builtin ops by compute class; an op computes in integers when its weight (input 1) is
# integer and its activation input is integer too (full int8) or quantized at run time (dynamic
# range: float activation, int8 weight, XNNPACK/reference kernels quantize the input per call).
_TFLITE_CLASSES = {"CONV_2D": "Conv", "DEPTHWISE_CONV_2D": "Conv", "TRANSPOSE_CONV": "Conv",
                   "FULLY_CONNECTED": "MatMul", "BATCH_MATMUL": "MatMul"}


def tflite_kernel_report(path: str | Path) -> KernelReport:
    import numpy as np
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(path))
    tensors = {d["index"]: d for d in interpreter.get_tensor_details()}
    report = KernelReport("litert")
    counts: Counter = Counter()
    float_nodes = []
    for op in interpreter._get_ops_details():  # the interpreter's own op list (what it executes)
        kind = op["op_name"]
        counts[kind] += 1
        cls = _TFLITE_CLASSES.get(kind)
        if cls is None:
            continue
        report.total[cls] = report.total.get(cls, 0) + 1
        inputs = [i for i in op["inputs"] if i >= 0]
        weight = tensors.get(inputs[1]) if len(inputs) > 1 else None
        integer = weight is not None and np.issubdtype(weight["dtype"], np.integer)
        if integer:
            report.quantized[cls] = report.quantized.get(cls, 0) + 1
        else:
            float_nodes.append((cls, tensors[op["outputs"][0]]["name"] if op["outputs"] else kind))
    report.op_counts = dict(sorted(counts.items()))
    report.float_islands = _islands(float_nodes)
    return report


def kernel_report(path: str | Path, fmt: str) -> KernelReport | None:
    """The report for an ONNX or LiteRT artifact; None for formats whose runtime is not on this host."""
    if fmt == "onnx":
        return onnx_kernel_report(path)
    if fmt == "tflite":
        return tflite_kernel_report(path)
    return None
