"""This host's GEMM peak, measured (not looked up), with the theoretical FMA peak beside it.

The probe is an N^3 fp32 MatMul and an int8 MatMulInteger (uint8 x int8 -> int32, the path
onnxruntime's int8 kernels use) through onnxruntime, best of a few runs: a peak is what the machine
can do, and on a shared machine the median would fold other processes' load into it.

B is an initializer, as a model holds its weights: onnxruntime pre-packs constant weights, and
with B as a graph input the int8 probe read 98 GOP/s where the pre-packed one read 153 on the same
Zen 3 host in the same run, so models "beat" the wrong peak (DESIGN.md section 3). Components
report achieved GFLOP/s as a fraction of these; a fraction above 1 means the probe is wrong.
"""

from __future__ import annotations

import os
import re
import time
from pathlib import Path

import numpy as np


def gemm_model(kind: str, n: int, seed: int = 0):
    """The probe: A (activations) is the graph input, B (weights) an initializer."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    if kind == "fp32":
        a = helper.make_tensor_value_info("A", TensorProto.FLOAT, [n, n])
        b = numpy_helper.from_array(rng.standard_normal((n, n), dtype=np.float32), "B")
        y = helper.make_tensor_value_info("Y", TensorProto.FLOAT, [n, n])
        node = helper.make_node("MatMul", ["A", "B"], ["Y"])
    else:
        a = helper.make_tensor_value_info("A", TensorProto.UINT8, [n, n])
        b = numpy_helper.from_array(rng.integers(-127, 127, (n, n), dtype=np.int8), "B")
        y = helper.make_tensor_value_info("Y", TensorProto.INT32, [n, n])
        node = helper.make_node("MatMulInteger", ["A", "B"], ["Y"])
    graph = helper.make_graph([node], f"gemm_{kind}", [a], [y], initializer=[b])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


# Each probe times calls for at least this long (and at least `runs` calls). Eight calls of the
# int8 2048^3 GEMM are 0.1-0.2 s, a window one busy moment of a shared VM fills: on a 2-core Zen 4
# VM, best-of-8 read 599-798 int8 GOP/s and 123-189 fp32 GFLOP/s over four probes in a row, where
# best-of-40 read 771-792 and 174-185 (the same minute). The peak is what the host can do, so a
# longer window finds it; `PROBE_MAX_RUNS` bounds the probe on a slow host.
PROBE_MIN_SECONDS = 1.0
PROBE_MAX_RUNS = 200


def gemm_throughput(kind: str, n: int = 2048, threads: int = 0, runs: int = 8, warmup: int = 2,
                    min_seconds: float = PROBE_MIN_SECONDS) -> float:
    """Giga-ops per second (2 n^3 per call) of one GEMM kind ("fp32" or "int8")."""
    rng = np.random.default_rng(1)
    if kind == "fp32":
        feeds = {"A": rng.standard_normal((n, n), dtype=np.float32)}
    else:
        feeds = {"A": rng.integers(0, 255, (n, n), dtype=np.uint8)}
    return 2.0 * n ** 3 / _best_seconds(gemm_model(kind, n), feeds, threads, runs, warmup, min_seconds) / 1e9


def _best_seconds(model, feeds: dict, threads: int, runs: int, warmup: int, min_seconds: float = 0.0) -> float:
    """The fastest timed call after `warmup`, over at least `runs` calls and `min_seconds` of
    calls (at most PROBE_MAX_RUNS): a peak, not a typical call."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.log_severity_level = 3
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    for _ in range(warmup):
        session.run(None, feeds)
    samples = []
    while len(samples) < runs or (sum(samples) < min_seconds and len(samples) < PROBE_MAX_RUNS):
        start = time.perf_counter()
        session.run(None, feeds)
        samples.append(time.perf_counter() - start)
    return min(samples)


# The conv probe: a 3x3 convolution at the width and size of a VAE decoder's middle levels.
# onnxruntime runs an int8 Conv (QLinearConv, uint8 activations, int8 symmetric weights) through
# its own direct-convolution kernels, not through the GEMM the MatMul probe times: on an AMX host
# the GEMM probe read 13-15x over fp32 while this conv read 3.7-3.9x (64-128 channels, 128-256 px),
# 2.6x at 320 channels, 5.1x for a 1x1 conv. A conv network's int8 ceiling is this ratio.
CONV_PROBE = {"channels": 128, "side": 128, "kernel": 3}


def conv_model(kind: str, channels: int = CONV_PROBE["channels"], side: int = CONV_PROBE["side"],
               kernel: int = CONV_PROBE["kernel"], seed: int = 0):
    """fp32 Conv, or DequantizeLinear -> Conv -> QuantizeLinear with uint8 input and output (what
    onnxruntime fuses into one QLinearConv); weights are initializers, as in a model."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    weight = rng.standard_normal((channels, channels, kernel, kernel)).astype(np.float32) * 0.05
    shape = [1, channels, side, side]
    pads = [kernel // 2] * 4
    if kind == "fp32":
        x = helper.make_tensor_value_info("X", TensorProto.FLOAT, shape)
        y = helper.make_tensor_value_info("Y", TensorProto.FLOAT, shape)
        nodes = [helper.make_node("Conv", ["X", "W"], ["Y"], pads=pads)]
        inits = [numpy_helper.from_array(weight, "W")]
    else:
        scale = (np.abs(weight).reshape(channels, -1).max(1) / 127).astype(np.float32)
        x = helper.make_tensor_value_info("X", TensorProto.UINT8, shape)
        y = helper.make_tensor_value_info("Y", TensorProto.UINT8, shape)
        nodes = [helper.make_node("DequantizeLinear", ["X", "x_scale", "zero"], ["x"]),
                 helper.make_node("DequantizeLinear", ["Wq", "w_scale", "w_zero"], ["W"], axis=0),
                 helper.make_node("Conv", ["x", "W"], ["y"], pads=pads),
                 helper.make_node("QuantizeLinear", ["y", "y_scale", "zero"], ["Y"])]
        inits = [numpy_helper.from_array(np.round(weight / scale[:, None, None, None]).astype(np.int8), "Wq"),
                 numpy_helper.from_array(scale, "w_scale"), numpy_helper.from_array(np.zeros(channels, np.int8), "w_zero"),
                 numpy_helper.from_array(np.array(0.02, np.float32), "x_scale"),
                 numpy_helper.from_array(np.array(0.05, np.float32), "y_scale"),
                 numpy_helper.from_array(np.array(128, np.uint8), "zero")]
    graph = helper.make_graph(nodes, f"conv_{kind}", [x], [y], initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 9
    onnx.checker.check_model(model)
    return model


def conv_throughput(kind: str, threads: int = 0, runs: int = 8, warmup: int = 2,
                    min_seconds: float = PROBE_MIN_SECONDS) -> float:
    """Giga-ops per second (2 x MACs per call) of the conv probe ("fp32" or "int8")."""
    c, side, k = CONV_PROBE["channels"], CONV_PROBE["side"], CONV_PROBE["kernel"]
    rng = np.random.default_rng(1)
    x = rng.standard_normal((1, c, side, side), dtype=np.float32)
    feeds = {"X": x if kind == "fp32" else rng.integers(0, 255, x.shape, dtype=np.uint8)}
    seconds = _best_seconds(conv_model(kind), feeds, threads, runs, warmup, min_seconds)
    return 2.0 * c * c * k * k * side * side / seconds / 1e9


# Per core per cycle, assuming two vector FMA ports (every AVX2 and AVX-512 server core of the
# last decade: Zen 2-5, Skylake-SP to Sapphire Rapids; some low-end Xeons have one AVX-512 port).
# fp32: 2 ports x lanes x 2 (multiply + add). int8: VNNI vpdpbusd does 4 u8 x s8 products per
# 32-bit lane (x2 for multiply + add); without VNNI, vpmaddubsw + vpmaddwd + vpaddd take about
# three instructions for the same work, a third of that. AMX (Sapphire Rapids and later): one
# tile multiply unit of 1024 int8 MACs per cycle, which onnxruntime's int8 GEMM (MLAS) uses: on
# such a host the int8/fp32 probe ratio read 15 where a VNNI-only part reads about 3.4.
def _per_cycle(flags: set[str]) -> tuple[int, int, str]:
    width = 512 if "avx512f" in flags else 256 if "avx2" in flags else 128
    lanes = width // 32
    fp32 = 2 * lanes * 2
    vnni = "avx512_vnni" in flags if width == 512 else "avx_vnni" in flags
    int8 = 2 * lanes * 4 * 2 if vnni else 2 * lanes * 4 * 2 // 3
    isa = f"{'AVX-512' if width == 512 else 'AVX2' if width == 256 else 'SSE'}{' VNNI' if vnni else ''}"
    if "amx_int8" in flags:
        int8, isa = 1024 * 2, isa + " + AMX-INT8"
    return fp32, int8, isa


def _cpu_facts() -> dict | None:
    """Flags, physical cores available to this process and the clock, from /proc/cpuinfo (Linux)."""
    info = Path("/proc/cpuinfo")
    if not info.exists():
        return None
    text = info.read_text()
    flags = set(re.search(r"^flags\s*:\s*(.*)$", text, re.M).group(1).split()) if "flags" in text else set()
    mhz = [float(m) for m in re.findall(r"^cpu MHz\s*:\s*([\d.]+)", text, re.M)]
    cores = {(p, c) for p, c in re.findall(r"^physical id\s*:\s*(\d+)\n(?:.*\n)*?core id\s*:\s*(\d+)", text, re.M)}
    available = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    siblings = re.search(r"^siblings\s*:\s*(\d+)", text, re.M)
    per_core = re.search(r"^cpu cores\s*:\s*(\d+)", text, re.M)
    threads_per_core = (int(siblings.group(1)) // int(per_core.group(1))) if siblings and per_core else 1
    physical = max(1, min(len(cores) or available, available // max(1, threads_per_core)))
    name = re.search(r"^model name\s*:\s*(.*)$", text, re.M)
    return {"flags": flags, "ghz": max(mhz) / 1e3 if mhz else None, "cores": physical,
            "model": name.group(1).strip() if name else "unknown"}


def theoretical_peak(threads: int = 0) -> dict | None:
    """fp32 and int8 FMA peaks from the CPU's flags and clock; None where they cannot be read."""
    facts = _cpu_facts()
    if not facts or not facts["ghz"]:
        return None
    fp32, int8, isa = _per_cycle(facts["flags"])
    cores = min(facts["cores"], threads) if threads > 0 else facts["cores"]
    return {"fp32_gflops": round(cores * facts["ghz"] * fp32, 1), "int8_gops": round(cores * facts["ghz"] * int8, 1),
            "cores": cores, "ghz": round(facts["ghz"], 3), "isa": isa, "cpu": facts["model"],
            "assumption": "2 vector FMA ports per core (1 AMX tile unit for int8 where present), the clock /proc/cpuinfo reports"}


def measure_machine_peak(threads: int = 0, n: int = 2048, min_seconds: float = PROBE_MIN_SECONDS) -> dict:
    import onnxruntime as ort

    fp32 = gemm_throughput("fp32", n, threads, min_seconds=min_seconds)
    int8 = gemm_throughput("int8", n, threads, min_seconds=min_seconds)
    conv_fp32 = conv_throughput("fp32", threads, min_seconds=min_seconds)
    conv_int8 = conv_throughput("int8", threads, min_seconds=min_seconds)
    return {
        "fp32_gflops": round(fp32, 1),
        "int8_gops": round(int8, 1),
        "int8_over_fp32": round(int8 / fp32, 2),  # the ceiling of an int8 MatMul/Gemm's speedup here
        "conv_fp32_gflops": round(conv_fp32, 1),
        "conv_int8_gops": round(conv_int8, 1),
        "conv_int8_over_fp32": round(conv_int8 / conv_fp32, 2),  # the ceiling of an int8 Conv's speedup
        "conv_probe": dict(CONV_PROBE),
        "method": f"onnxruntime {ort.__version__} CPU, {n}^3 MatMul (fp32) / MatMulInteger (u8 x s8), "
                  f"B as an initializer (pre-packed, as a model's weights), the best call of at least 8 "
                  f"and at least {min_seconds:g} s of calls per probe",
        "probe_min_seconds": min_seconds,
        "gemm_size": n,
        "threads": threads,
        "theoretical": theoretical_peak(threads),
    }


def describe_peak(peak: dict) -> str:
    """One line for reports: measured peaks, their ratio, and the theoretical FMA peak beside them."""
    text = (f"fp32 {peak['fp32_gflops']:.0f} GFLOP/s, int8 {peak['int8_gops']:.0f} GOP/s measured"
            + (f" (int8/fp32 {peak['int8_over_fp32']:.2f})" if peak.get("int8_over_fp32") else ""))
    if peak.get("conv_int8_over_fp32"):
        probe = peak.get("conv_probe", CONV_PROBE)
        text += (f"; {probe['kernel']}x{probe['kernel']} conv ({probe['channels']} ch, {probe['side']}^2): "
                 f"fp32 {peak['conv_fp32_gflops']:.0f} GFLOP/s, int8 {peak['conv_int8_gops']:.0f} GOP/s "
                 f"(int8/fp32 {peak['conv_int8_over_fp32']:.2f})")
    theory = peak.get("theoretical")
    if theory:
        text += (f"; theoretical fp32 {theory['fp32_gflops']:.0f} GFLOP/s, int8 {theory['int8_gops']:.0f} GOP/s "
                 f"({theory['cores']} cores x {theory['ghz']} GHz, {theory['isa']})")
    return text


PEAK_KEYS = ("fp32_gflops", "int8_gops", "conv_fp32_gflops", "conv_int8_gops")


def best_of_peaks(readings: list[dict]) -> dict:
    """One peak from several probes of the same run (before and after the timed work): each
    throughput the highest any reading saw, since a peak is what the host did at least once; the
    ratios recomputed from those; `readings` keeps every probe's four numbers."""
    readings = [flat for r in readings for flat in r.get("readings", [r])]  # a combined peak adds its own
    best = {k: v for k, v in readings[0].items() if k != "readings"}
    for key in PEAK_KEYS:
        values = [r[key] for r in readings if r.get(key)]
        if values:
            best[key] = max(values)
    if best.get("fp32_gflops") and best.get("int8_gops"):
        best["int8_over_fp32"] = round(best["int8_gops"] / best["fp32_gflops"], 2)
    if best.get("conv_fp32_gflops") and best.get("conv_int8_gops"):
        best["conv_int8_over_fp32"] = round(best["conv_int8_gops"] / best["conv_fp32_gflops"], 2)
    best["readings"] = [{key: r.get(key) for key in PEAK_KEYS} for r in readings]
    return best
