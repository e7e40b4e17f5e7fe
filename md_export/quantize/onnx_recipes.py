"""ONNX recipes, all through onnxruntime.quantization (and its fp16 converter).

- onnx-dynamic-int8: int8 weights, activations quantized at run time per tensor. No calibration.
  Pick it when you have no calibration data; it speeds MatMul-heavy graphs (text encoder) most.
- onnx-static-int8: QDQ, int8 symmetric per-channel weights + uint8 asymmetric activations with
  ranges calibrated on real sampler inputs (W8A8, the U8S8 layout of onnxruntime's x86/ARM int8
  kernels); attention's activation x activation products stay float (faster there). The fastest
  CPU recipe; the one that needs the fallback loop.
- onnx-static-int8-symmetric: the same with signed symmetric int8 activations (S8S8), the layout
  NPU delegates (QNN HTP, many NPUs) require. On x86 onnxruntime it leaves Convs after a ReLU
  unfused (16 of 41 on a conv+ReLU decoder) and runs slower than fp32: a target recipe, not a
  CPU one.
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
from .kernels import constant_names, multiplies_two_activations
from .ort_weights import vectorized_per_channel_weights
from .tail_ranges import TailRanges


STATIC_OP_TYPES = ("Conv", "MatMul", "Gemm", "Gather")  # Gather: the token embedding, a text encoder's largest tensor
# Ops that only move or clamp uint8 codes. Listed, onnxruntime's QDQ quantizer folds a ReLU / Clip
# into the quantization range of the op before it and keeps a nearest Resize between the same
# Q/DQ pair, so onnxruntime runs them on uint8. Left out, a Conv -> ReLU -> Conv chain became
# QLinearConv -> DequantizeLinear -> QuantizeLinear -> QLinearConv (a requantization per Conv,
# since the Conv's range and the ReLU's differ) and Resize ran in float. Measured on the
# mobilediffusion-taesd decoder at 512 (conv+ReLU): Q/DQ left 53 -> 11, 1.71x -> 2.09x over fp32,
# 56 dB either way; the light decoder and the UNet (no ReLU after a quantized op) keep the same graph.
# An op whose input is float (not the output of a quantized op) stays float, so this adds no Q/DQ.
PASS_THROUGH_OP_TYPES = ("Relu", "Clip", "Resize")
# An Add inside an integer chain (both inputs from quantized ops, every consumer a quantized op)
# becomes QLinearAdd and the chain stays integer: TAESD at 512, Q/DQ left 11 -> 2, 2.09x -> 2.37x
# over fp32. Any other Add stays float. Quantizing every Add added Q/DQ pairs around GroupNorm
# affines and made the light decoder slower (1.65x -> 1.40x, 114 Q/DQ left instead of 58);
# quantizing residual Adds that feed a GroupNorm cost it 1.3 dB (39.2 -> 37.9 on real latents)
# for no measurable speed.
INTEGER_CHAIN_OP_TYPES = ("Add",)
_INTEGER_CONSUMERS = ("Conv",) + PASS_THROUGH_OP_TYPES + INTEGER_CHAIN_OP_TYPES


# MatMuls between two activations (attention's q k^T and its product with v) stay float in the
# uint8 recipe: on onnxruntime they ran as QLinearMatMul / MatMulIntegerToFloat behind a
# QuantizeLinear of each operand, and as float products (FusedMatMul, the attention scale folded
# in) they cost less. Measured on the `mobilediffusion` networks at 512, 2-core AMX Xeon, the two
# graphs called in alternation, both calibrated on the same data: UNet (76 products, head width
# 64) 446.8 -> 427.6 ms (10 calls), parity 35.2 / 38.6 dB both (seeded / real inputs); light VAE
# decoder (2) 1,354.8 -> 1,349.7 ms (5), 29.9 / 40.6 dB both; text encoder (24) 46.9 -> 46.9 ms
# (30), 50.0 -> 50.9 dB. LiteRT's dynamic int8 runs them in float as well (its UNet profile: Batch
# Matrix Multiply, F32, 26.2 ms against onnxruntime's 49.0 ms of int8 attention products).
def activation_product_nodes(graph) -> list[str]:
    """MatMul nodes of an ONNX graph whose operands are both computed in it (neither a weight nor a constant)."""
    constants = constant_names(graph)
    return sorted(n.name for n in graph.node if n.op_type == "MatMul" and multiplies_two_activations(n, constants))


def uint8_float_nodes(model_path: Path, excluded: list[str]) -> list[str]:
    """What the uint8 recipe leaves float beside `excluded`: the Adds outside integer chains, then
    the products of two activations. Reads the graph once (in one child process for a large model)."""
    import onnx

    graph = onnx.load(str(model_path), load_external_data=False).graph
    chain = float_chain_nodes(graph, excluded)
    return chain + [n for n in activation_product_nodes(graph) if n not in chain and n not in excluded]


def float_chain_nodes(graph, excluded: list[str]) -> list[str]:
    """The INTEGER_CHAIN_OP_TYPES nodes of an ONNX graph outside an integer chain: what
    onnxruntime's quantizer must leave alone. Repeated to a fixed point: leaving one Add float can
    break the next chain."""
    skipped = set(excluded)
    nodes = [n for n in graph.node if n.name not in skipped]
    consumers: dict[str, list] = {}
    for node in nodes:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    graph_outputs = {o.name for o in graph.output}
    float_nodes: set[str] = set()
    while True:
        integer: set[str] = set()  # tensors a quantized op produces
        for node in nodes:  # ONNX keeps nodes in topological order
            if node.name in float_nodes:
                continue
            data_inputs = node.input[:1] if node.op_type in PASS_THROUGH_OP_TYPES else node.input  # not Resize's scales
            if node.op_type == "Conv" or (node.op_type in _INTEGER_CONSUMERS and all(n in integer for n in data_inputs)):
                integer.add(node.output[0])
        changed = False
        for node in nodes:
            if node.op_type not in INTEGER_CHAIN_OP_TYPES or node.name in float_nodes:
                continue
            out = node.output[0]
            inside = (all(name in integer for name in node.input) and out not in graph_outputs
                      and all(c.op_type in _INTEGER_CONSUMERS and c.name not in float_nodes
                              for c in consumers.get(out, [])))
            if not inside:
                float_nodes.add(node.name)
                changed = True
        if not changed:
            return sorted(float_nodes)


# onnxruntime's quantize_static preprocesses, calibrates and quantizes in one process, holding
# the model, a copy, the calibration model and its session at once: 8.9-9.4 GB for the 1.5 GB
# mobilediffusion UNet. Each phase in its own child process (a few seconds of start-up each),
# measured on that UNet at 512: preprocessing 7.9 GB (5.8 GB once `preprocess` read from file;
# since onnxruntime writes its output alone, 4.98 -> 2.90 GB max RSS back to back, 2-core EPYC),
# calibration 6.9 GB, quantization 3.3 GB peak, 137 s in all against about 200 s in one process.
# Models under 1 GiB stay in process: the 492 MB mobilediffusion text encoder took 43.4 s with
# its phases isolated (each child starts onnxruntime and reads the model again) and 22.8 s in one
# process, byte-identical output, 2.4 GB peak (the whole job's static int8 stage: 6.3 GB).
ISOLATE_PHASES_ABOVE_BYTES = 1 * 2**30


def _model_bytes(path: Path) -> int:
    path = Path(path)
    external = path.with_name(path.name + ".data")
    return path.stat().st_size + (external.stat().st_size if external.exists() else 0)


def _in_process(fn, *args):
    return fn(*args)


def _isolated(fn, *args):
    from ..isolated import run_isolated

    return run_isolated(fn, *args)


# Activation range methods of the static recipes. "minmax": each tensor's min and max over the
# calibration rows (onnxruntime's MinMax). "percentile": the two tails of PERCENTILE's complement
# clipped, (100 - 99.999) / 2 = 5e-6 of the values on each side (onnxruntime's Percentile
# semantics with symmetric=False), computed exactly by tail_ranges.TailRanges.
RANGE_METHODS = ("minmax", "percentile")
PERCENTILE = 99.999
# Which method each component's uint8 activations get (`md-export quantize --activation-ranges
# auto`). Measured on the trained mobilediffusion-micro (16 prompts x 4 steps of UNet calibration,
# the decoder's latents from 20-step runs), all three networks onnx-static-int8, final-image PSNR
# against the fp32 torch pipeline over 8 held-out prompts (20 steps, guidance 2), mean / min dB:
#   min/max everywhere                          34.24 / 30.22
#   percentile for the UNet                     35.40 / 34.38
#   percentile for the UNet and text encoder    34.98 / 32.13
#   percentile everywhere                       35.09 / 32.05
# The text encoder loses with clipped ranges: CLIP's few large activations carry meaning.
COMPONENT_RANGE_METHODS = {"unet": "percentile"}


def range_method(component: str | None, kind: str, requested: str = "auto") -> str:
    """The activation range method for one artifact: `requested` unless "auto"; "auto" follows
    COMPONENT_RANGE_METHODS for the uint8 static recipe (where it was measured) and min/max
    elsewhere (int16 activations have steps to spare; the symmetric layout is an NPU target)."""
    if requested != "auto":
        if requested not in RANGE_METHODS:
            raise ValueError(f"activation ranges must be auto or one of {', '.join(RANGE_METHODS)}, got {requested!r}")
        return requested
    return COMPONENT_RANGE_METHODS.get(component, "minmax") if kind == "static_int8" else "minmax"


def calibrate_ranges(model_path: Path, op_types: list[str], feeds: list[dict[str, np.ndarray]], cache: Path,
                     keep: tuple[int, ...] = (), method: str = "minmax") -> dict[int, dict[str, np.ndarray]]:
    """The range of every tensor quantize_static would calibrate, written where its
    `calibration_cache_path` reads them: the calibration half of quantize_static, on its own.
    `method`: one of RANGE_METHODS. Returns the model's own outputs (name -> array) on the feeds
    whose index is in `keep`: the calibration pass computes them anyway."""
    from onnxruntime.quantization.calibrate import (CalibrationMethod, TensorsData, create_calibrator,
                                                    save_tensors_data)

    import gc

    import onnxruntime as ort

    if method not in RANGE_METHODS:
        raise ValueError(f"activation range method must be one of {', '.join(RANGE_METHODS)}, got {method!r}")
    with tempfile.TemporaryDirectory() as work, quiet():
        augmented = str(Path(work) / "augmented_model.onnx")
        # MinMax's augmented model reduces each tensor to its min and max inside onnxruntime;
        # Percentile's outputs the tensors themselves, which TailRanges reads.
        library_method = CalibrationMethod.MinMax if method == "minmax" else CalibrationMethod.Percentile
        calibrator = create_calibrator(Path(model_path), op_types, augmented_model_path=augmented,
                                       calibrate_method=library_method, use_external_data_format=True)
        # The calibrator keeps the ModelProto it augmented and a session with onnxruntime's
        # default arena; neither is needed to collect ranges. Measured on the mobilediffusion UNet
        # at 512 (2-core Zen 4): this phase peaked at 6.93 GB with them.
        calibrator.model = None
        calibrator.infer_session = None
        gc.collect()
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL  # as the calibrator's own
        options.enable_cpu_mem_arena = False
        options.enable_mem_pattern = False
        session = ort.InferenceSession(augmented, options, providers=["CPUExecutionProvider"])
        keeper = _KeepOutputs(session, calibrator.model_original_outputs, keep)
        if method == "minmax":
            calibrator.infer_session = keeper
            calibrator.collect_data(FeedReader(feeds))
            save_tensors_data(calibrator.compute_data(), cache)
            return keeper.kept
        tails = TailRanges(len(feeds), (100.0 - PERCENTILE) / 200.0)
        names = [o.name for o in session.get_outputs()]
        calibrated = set(calibrator.tensors_to_calibrate)
        for feed in feeds:  # one row at a time: a row of every UNet tensor at 512 is 1.8 GB
            for name, value in zip(names, keeper.run(None, feed)):
                if name in calibrated:
                    tails.add(name, value)
        # As onnxruntime's MinMax writes them: one-element arrays.
        ranges = {name: (low.reshape(1), high.reshape(1)) for name, (low, high) in tails.ranges().items()}
        save_tensors_data(TensorsData(CalibrationMethod.MinMax, ranges), cache)
        return keeper.kept


class _KeepOutputs:
    """The calibration session, keeping the model's own outputs (not the ranges onnxruntime's
    calibrator adds) of the calls whose index is in `keep`."""

    def __init__(self, session, names: set[str], keep: tuple[int, ...]):
        self._session, self._names, self._keep = session, set(names), set(keep)
        self._calls = 0
        self.kept: dict[int, dict[str, np.ndarray]] = {}

    def run(self, output_names, feed, *args, **kwargs):
        result = self._session.run(output_names, feed, *args, **kwargs)
        if output_names is None and self._calls in self._keep:
            self.kept[self._calls] = {o.name: np.array(value) for o, value in zip(self._session.get_outputs(), result)
                                      if o.name in self._names}
        self._calls += 1
        return result

    def __getattr__(self, name):
        return getattr(self._session, name)


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
    """onnxruntime's basic graph optimisation, the one step of `quant_pre_process(skip_symbolic_shape=True,
    skip_onnx_shape=True)`, written by onnxruntime itself from file to file: Python never holds the model.

    No shape inference and no preprocessing mark here: quantize_static and its calibrator each run
    ONNX shape inference on the file they are given (`load_model_with_shape_infer`), so shapes
    inferred here were inferred again, and the mark only silences quantize_static's warning. Stamping
    it meant loading the model into Python and serialising it again (15.8 s for the 1.5 GB
    `mobilediffusion` UNet at 512 alone). Measured on that UNet (2-core AMD EPYC, AVX2): its
    preprocessing phase 26.9 -> 16.3 s, the quantized model the same byte for byte but for the
    `onnx.quant.pre_process` metadata key; the text encoder's 8.7 -> 5.4 s."""
    import onnxruntime

    out = work / "preprocessed.onnx"
    options = onnxruntime.SessionOptions()
    options.optimized_model_filepath = str(out)
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_BASIC
    if Path(fp32_path).with_name(Path(fp32_path).name + ".data").exists():
        # A model with its tensors in a sidecar (the dynamo-exported UNet): onnxruntime would write
        # references to that sidecar's name, not to one beside the optimized file.
        options.add_session_config_entry("session.optimized_model_external_initializers_file_name", out.name + ".data")
        options.add_session_config_entry("session.optimized_model_external_initializers_min_size_in_bytes", "1024")
    with quiet():
        session = onnxruntime.InferenceSession(str(fp32_path), options, providers=["CPUExecutionProvider"])
        del session
    return out


# x86 without VNNI (AVX2-only parts such as Zen 3): onnxruntime's u8 x s8 kernels multiply with
# vpmaddubsw, which adds each pair of u8*s8 products into a saturating int16 (255*127*2 > 32767),
# so large activations meeting large weights clip. Measured on a 2-core Zen 3 with 8-bit weights:
# the tiny decoder's static int8 fell to cosine 0.90 / 0.94 (gate 0.95), a Conv + MatMul model's
# dynamic int8 to 26.3 dB (gate 30); on the VNNI hosts (vpdpbusd adds in int32) the same tests pass.
# The full `mobilediffusion` UNet at 512 there: 26.1 / 27.9 dB (seeded / real inputs) with 8-bit
# weights, 33.6 / 37.1 dB with 7-bit, the same kernels (1200 / 1251 ms median of 8 alternating calls).
# 7-bit weights (onnxruntime's reduce_range) keep every pair sum in range, at about half the
# weights' resolution, so they are used only where the kernels need them, and the manifest says so.
VNNI_FLAGS = frozenset({"avx512_vnni", "avx_vnni", "amx_int8"})
REDUCE_RANGE_ENV = "MD_EXPORT_REDUCE_RANGE"  # "1" / "0" force it on / off; unset: by this host


def reduced_weight_range() -> dict:
    """Whether int8 weights are quantized to 7 bits on this host, and why (a manifest field)."""
    import os
    import platform

    from ..runtimes.ort_cache import cpu_isa

    forced = os.environ.get(REDUCE_RANGE_ENV)
    if forced in ("0", "1"):
        return {"reduce_range": forced == "1", "reason": f"{REDUCE_RANGE_ENV}={forced}"}
    if forced not in (None, ""):
        raise ValueError(f"{REDUCE_RANGE_ENV} must be 0 or 1, got {forced!r}")
    if platform.machine().lower() not in ("x86_64", "amd64", "x86", "i686"):
        return {"reduce_range": False, "reason": f"{platform.machine()}: no saturating int8 pair sums"}
    if VNNI_FLAGS & set(cpu_isa()):
        return {"reduce_range": False, "reason": "x86 with VNNI: int8 products add in int32"}
    return {"reduce_range": True, "reason": "x86 without VNNI: onnxruntime's u8 x s8 kernels add product "
                                            "pairs in a saturating int16, so weights use 7 bits"}


def dynamic_int8(fp32_path: Path, out: Path, feeds=None, nodes_to_exclude=None) -> Path:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    with quiet():
        quantize_dynamic(str(fp32_path), str(out), weight_type=QuantType.QInt8, per_channel=True,
                         reduce_range=reduced_weight_range()["reduce_range"],
                         nodes_to_exclude=nodes_to_exclude or [])
    return out


# Activation layouts: (onnxruntime QuantType name, symmetric). Weights are always int8 symmetric
# per-channel. uint8 asymmetric is what onnxruntime's fused CPU kernels (QLinearConv, QLinearMatMul,
# QGemm, MatMulIntegerToFloat) take: measured on mobilediffusion-taesd-tiny, signed symmetric
# activations fused 22 of 35 decoder Convs and 63 of 75 UNet Convs (UNet 20-26 dB); uint8 fused
# all of them (UNet 38 dB, decoder 62 dB), since after a ReLU a symmetric range wastes half its codes.
ACTIVATION_LAYOUTS = {"uint8": ("QUInt8", False), "int8-symmetric": ("QInt8", True), "int16": ("QInt16", True)}
# The outputs of MatMul/Gemm stay float (DequantizeLinear -> MatMul -> float fuses into
# MatMulIntegerToFloat / QGemm with float output): one QuantizeLinear-DequantizeLinear pair fewer
# per projection (UNet-tiny: 197 Q/DQ left instead of 253, same PSNR). A Conv keeps its output Q,
# which onnxruntime needs to fuse it into QLinearConv.
FLOAT_OUTPUT_OPS = ["MatMul", "Gemm"]


def static_int8(fp32_path: Path, out: Path, feeds, nodes_to_exclude=None, cache: Path | None = None,
                activation_type: str = "uint8", preprocessed: bool = False,
                model_outputs: dict[int, dict[str, np.ndarray]] | None = None, ranges: str = "minmax") -> Path:
    """`preprocessed`: `fp32_path` already went through `preprocess` (node names in
    `nodes_to_exclude` must be the preprocessed graph's). `activation_type`: a key of ACTIVATION_LAYOUTS.
    `model_outputs`: feed index -> None on entry; the fp32 model's outputs on those feeds are
    filled in from the calibration pass (left None when a cache spared it). `ranges`: the
    activation range method, one of RANGE_METHODS (ignored when `cache` holds ranges already)."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    quant_type, symmetric = ACTIVATION_LAYOUTS[activation_type]
    activation = getattr(QuantType, quant_type)
    # The compute-heavy ops (and embeddings) only: the same accuracy as quantizing every op on the tiny UNet
    # (19-26 dB either way), a smaller file, and about half the time in onnxruntime's QDQ pass,
    # which grows quadratically with the number of Q/DQ pairs it inserts.
    extra = {"ActivationSymmetric": symmetric, "WeightSymmetric": True}
    if activation_type == "uint8":
        extra["OpTypesToExcludeOutputQuantization"] = FLOAT_OUTPUT_OPS
    if activation_type == "int16":
        extra["UseQDQContribOps"] = True  # int16 Q/DQ are com.microsoft ops in onnxruntime
    with tempfile.TemporaryDirectory() as work, quiet():
        # A large model's phases each run in a child process (ISOLATE_PHASES_ABOVE_BYTES)
        phase = _isolated if _model_bytes(fp32_path) >= ISOLATE_PHASES_ABOVE_BYTES else _in_process
        model = fp32_path if preprocessed else phase(preprocess, fp32_path, Path(work))
        op_types, excluded = list(STATIC_OP_TYPES + PASS_THROUGH_OP_TYPES), list(nodes_to_exclude or [])
        if activation_type == "uint8":
            op_types += INTEGER_CHAIN_OP_TYPES
            excluded += phase(uint8_float_nodes, Path(model), excluded)
        cache = Path(cache) if cache else Path(work) / "calibration_ranges.json"
        if not cache.is_file():
            if feeds is None:
                raise ValueError("static quantization needs calibration feeds or an existing calibration cache")
            kept = phase(calibrate_ranges, Path(model), op_types, list(feeds), cache, tuple(model_outputs or ()),
                         ranges)
            if model_outputs is not None:
                model_outputs.update(kept)
        # int16 activations run as float (no fused kernels): no pair sums to saturate
        reduce_range = activation_type != "int16" and reduced_weight_range()["reduce_range"]
        with vectorized_per_channel_weights():  # bit-identical, without a Python loop per channel
            quantize_static(str(model), str(out), None,
                            quant_format=QuantFormat.QDQ, per_channel=True, activation_type=activation,
                            reduce_range=reduce_range,
                            op_types_to_quantize=op_types,
                            weight_type=QuantType.QInt8, nodes_to_exclude=excluded,
                            calibrate_method=CalibrationMethod.MinMax, extra_options=extra,
                            calibration_cache_path=str(cache))
    return out


def static_int8_symmetric(fp32_path: Path, out: Path, feeds, nodes_to_exclude=None, cache: Path | None = None,
                          preprocessed: bool = False, model_outputs: dict | None = None, ranges: str = "minmax") -> Path:
    return static_int8(fp32_path, out, feeds, nodes_to_exclude, cache, "int8-symmetric", preprocessed, model_outputs,
                       ranges)


def w8a16(fp32_path: Path, out: Path, feeds, nodes_to_exclude=None, cache: Path | None = None,
          preprocessed: bool = False, model_outputs: dict | None = None, ranges: str = "minmax") -> Path:
    return static_int8(fp32_path, out, feeds, nodes_to_exclude, cache, "int16", preprocessed, model_outputs, ranges)


def fp16(fp32_path: Path, out: Path, feeds=None, nodes_to_exclude=None):
    """Returns the fp16 overflow scan over `feeds` (the nodes kept fp32 and why)."""
    return onnx_backend.to_fp16(fp32_path, out, node_block_list=nodes_to_exclude, scan_feeds=feeds)
