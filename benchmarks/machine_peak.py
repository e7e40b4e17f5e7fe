"""This host's GEMM peak, measured (not looked up): an N^3 fp32 MatMul and an int8 MatMulInteger
(uint8 x int8 -> int32, the path onnxruntime's int8 kernels use) through onnxruntime, the best of
a few runs: a peak is what the machine can do, and on a shared machine the median would fold other
processes' load into it. Components report their achieved GFLOP/s as a fraction of these.
"""

from __future__ import annotations

import time

import numpy as np


def _gemm_model(kind: str, n: int):
    import onnx
    from onnx import TensorProto, helper

    if kind == "fp32":
        a = helper.make_tensor_value_info("A", TensorProto.FLOAT, [n, n])
        b = helper.make_tensor_value_info("B", TensorProto.FLOAT, [n, n])
        y = helper.make_tensor_value_info("Y", TensorProto.FLOAT, [n, n])
        node = helper.make_node("MatMul", ["A", "B"], ["Y"])
    else:
        a = helper.make_tensor_value_info("A", TensorProto.UINT8, [n, n])
        b = helper.make_tensor_value_info("B", TensorProto.INT8, [n, n])
        y = helper.make_tensor_value_info("Y", TensorProto.INT32, [n, n])
        node = helper.make_node("MatMulInteger", ["A", "B"], ["Y"])
    graph = helper.make_graph([node], f"gemm_{kind}", [a, b], [y])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model.SerializeToString()


def gemm_throughput(kind: str, n: int = 2048, threads: int = 0, runs: int = 8, warmup: int = 2) -> float:
    """Giga-ops per second (2 n^3 per call) of one GEMM kind ("fp32" or "int8")."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.log_severity_level = 3
    session = ort.InferenceSession(_gemm_model(kind, n), options, providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    if kind == "fp32":
        feeds = {"A": rng.standard_normal((n, n), dtype=np.float32), "B": rng.standard_normal((n, n), dtype=np.float32)}
    else:
        feeds = {"A": rng.integers(0, 255, (n, n), dtype=np.uint8), "B": rng.integers(-127, 127, (n, n), dtype=np.int8)}
    for _ in range(warmup):
        session.run(None, feeds)
    samples = []
    for _ in range(runs):
        start = time.perf_counter()
        session.run(None, feeds)
        samples.append(time.perf_counter() - start)
    return 2.0 * n ** 3 / min(samples) / 1e9


def measure_machine_peak(threads: int = 0, n: int = 2048) -> dict:
    import onnxruntime as ort

    return {
        "fp32_gflops": round(gemm_throughput("fp32", n, threads), 1),
        "int8_gops": round(gemm_throughput("int8", n, threads), 1),
        "method": f"onnxruntime {ort.__version__} CPU, {n}^3 MatMul (fp32) / MatMulInteger (u8 x s8), best of 8",
        "gemm_size": n,
        "threads": threads,
    }
