"""`md-export bench profile ARTIFACT`: where one exported network's time goes, per op type and per
PyTorch module, from the runtime's own per-kernel timings.

    .onnx   ─> onnxruntime session, enable_profiling ─> warm-up + timed runs ─> Chrome-trace JSON
            ─> "Node" events `<node>_kernel_time` inside the last N `model_run` spans
            ─> node name ─> longest module scope of the file's own nodes (module_of) ─> leaf module
    .tflite ─> LiteRT's own profiler through the wheel's C API (runtimes/litert_profiler.py) ─> the
               XNNPACK operators of each timed run, by op type (no module names: XNNPACK keeps none)
    .tflite --binary B ─> TFLite benchmark_model --enable_op_profiling ─> "Run Order" table of the timed runs
            ─> "[output tensor]:index" ─> litert-torch scope "pkg.Class_attr/..." ─> walk the preset's
               module tree (built on the meta device) ─> leaf module
                                  │
        per node ms per run ──────┴─> by op type, by module at --depth, by leaf module, top nodes
                                  ─> Markdown on stdout, --json, --markdown, --chart (PNG)

Times are kernel times: what the runtime spent inside each node, not Python or session overhead
(`wall_p50_ms` says how far apart the two are). Module names are paths of the network's
`named_modules()`; "(graph)" is work outside any submodule (top-level ops, layout / I/O ops the
runtime adds), "(unmapped)" a LiteRT node whose scope could not be resolved to one module.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from md_export.errors import MdExportError

GRAPH = "(graph)"
UNMAPPED = "(unmapped)"
KERNEL_SUFFIX = "_kernel_time"
TOOL = "benchmark_model"
RUNTIME_COLORS = {"onnxruntime": "#1f77b4", "litert": "#ff9f1c"}  # as in report.chart_png


@dataclass(frozen=True)
class Source:
    """The artifact, and its manifest entry when it sits in an md-export artifact directory."""

    path: Path
    fmt: str  # "onnx" or "tflite"
    entry: dict | None
    manifest: dict | None


@dataclass
class NodeTime:
    node: str
    op_type: str
    module: str  # leaf module path, GRAPH or UNMAPPED
    ms: float  # mean per timed run


@dataclass
class Measured:
    """What one runtime reports: per-node times plus the run-level numbers the result carries."""

    nodes: list[NodeTime]
    runs: int
    total_ms: float
    total_statistic: str  # "median" (per-run totals known) or "mean" (only averages printed)
    wall_p50_ms: float | None
    inputs: str
    notes: list[str]


# ---- the artifact ---------------------------------------------------------------------------------


def open_source(path: str | Path) -> Source:
    from md_export.export.manifest import MANIFEST, ManifestError, read_manifest

    path = Path(path)
    if not path.is_file():
        raise MdExportError(f"{path} does not exist" if not path.exists() else f"{path} is not a file")
    fmt = {".onnx": "onnx", ".tflite": "tflite"}.get(path.suffix.lower())
    if fmt is None:
        raise MdExportError(f"{path.name}: bench profile takes one .onnx or .tflite file")
    if not (path.parent / MANIFEST).is_file():
        return Source(path, fmt, None, None)
    try:
        manifest = read_manifest(path.parent)
    except ManifestError as exc:
        raise MdExportError(str(exc)) from None
    entry = next((e for e in manifest["artifacts"] if e.get("file") == path.name), None)
    return Source(path, fmt, entry, manifest if entry else None)


def _reference_feeds(source: Source) -> dict[str, np.ndarray] | None:
    """The exporter's reference inputs: the numbers parity was checked on (None without them)."""
    from md_export.parity import load_reference
    from md_export.runtimes.base import ArtifactLoadError

    if source.entry is None or not source.entry.get("reference"):
        return None
    try:
        feeds, _ = load_reference(source.path.parent, source.entry)
    except ArtifactLoadError:
        return None  # a reference npz deleted after export: fall back to seeded random inputs
    return feeds or None


# ---- onnxruntime ----------------------------------------------------------------------------------


def _onnx_session(path: Path, threads: int, trace_dir: str):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.log_severity_level = 3
    options.enable_profiling = True
    options.profile_file_prefix = os.path.join(trace_dir, "ort_profile")
    try:
        return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # InvalidProtobuf, Fail, NoSuchFile... all mean "not a loadable model"
        raise MdExportError(f"cannot load ONNX model {path.name}: {str(exc).splitlines()[0]}") from None


def _onnx_feeds(session, source: Source, seed: int) -> tuple[dict[str, np.ndarray], str]:
    from md_export.runtimes.base import TensorSpec
    from md_export.runtimes.onnx_runner import _ORT_DTYPES

    from .inputs import random_feeds

    specs = tuple(TensorSpec(i.name, tuple(d if isinstance(d, int) else -1 for d in i.shape),
                             _ORT_DTYPES.get(i.type, "float32")) for i in session.get_inputs())
    reference = _reference_feeds(source)
    if reference is None:
        return random_feeds(specs, seed), f"random (seed {seed})"
    missing = [s.name for s in specs if s.name not in reference]
    if missing:
        raise MdExportError(f"{source.entry['reference']} has no input {missing[0]!r} that {source.path.name} takes")
    return {s.name: np.ascontiguousarray(reference[s.name], dtype=s.dtype) for s in specs}, "reference"


def _timed_runs(session, feeds: dict, warmup: int, runs: int) -> list[float]:
    for _ in range(warmup):
        session.run(None, feeds)
    walls = []
    for _ in range(runs):
        start = time.perf_counter()
        session.run(None, feeds)
        walls.append((time.perf_counter() - start) * 1e3)
    return walls


def read_ort_trace(events: list[dict], runs: int) -> tuple[dict[str, tuple[str, float]], list[float]]:
    """Per node (op type, total us over the timed runs) and the kernel total of each timed run.

    One session is profiled from its first call, so the trace holds the warm-up runs too. Each
    `Session/model_run` event spans one `session.run`; the node events inside the last `runs` spans
    are the timed ones. Dropping warm-up by span (not by event count) stays right when a run
    executes a different number of kernels (control flow, a first-run-only initializer).
    """
    spans = sorted((e["ts"], e["ts"] + e["dur"]) for e in events
                   if e.get("cat") == "Session" and e.get("name") == "model_run")[-runs:]
    per_node: dict[str, list] = {}
    run_totals = [0.0] * len(spans)
    for event in events:
        if event.get("cat") != "Node" or not event.get("name", "").endswith(KERNEL_SUFFIX):
            continue
        run = next((i for i, (begin, end) in enumerate(spans) if begin <= event["ts"] <= end), None)
        if run is None:
            continue  # a warm-up run
        node = event["name"][: -len(KERNEL_SUFFIX)]
        slot = per_node.setdefault(node, [event.get("args", {}).get("op_name", "?"), 0.0])
        slot[1] += event["dur"]
        run_totals[run] += event["dur"]
    return {node: (op, us) for node, (op, us) in per_node.items()}, run_totals


def onnx_scopes(path: Path) -> set[str]:
    """Module paths named in the file's own nodes: the exporter's scopes, before any runtime fusion."""
    import onnx

    from md_export.quantize.kernels import module_of

    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception:  # onnxruntime loaded it, so this is an exotic encoding: map everything to (graph)
        return set()
    return {module_of(node.name) for node in model.graph.node} - {GRAPH}


def onnx_module(node: str, scopes: set[str]) -> str:
    """The longest known scope the runtime node's name starts with.

    onnxruntime keeps the original name as a prefix when it rewrites a node, but appends to it in
    many shapes ("/attn2/MatMul/MatMulScaleFusion/", "/conv1/Conv_output_0_nchwc", "..._token_12"),
    so matching prefixes against the file's real scopes beats parsing each suffix style.
    """
    parts = [p for p in node.strip("/").split("/") if p]
    for k in range(len(parts), 0, -1):
        candidate = ".".join(parts[:k])
        if candidate in scopes:
            return candidate
    return GRAPH


def profile_onnx(source: Source, runs: int, warmup: int, threads: int, seed: int) -> Measured:
    with tempfile.TemporaryDirectory(prefix="md_profile_") as trace_dir:
        session = _onnx_session(source.path, threads, trace_dir)
        feeds, inputs = _onnx_feeds(session, source, seed)
        try:
            walls = _timed_runs(session, feeds, warmup, runs)
        except Exception as exc:  # a model that loads but cannot run these inputs
            raise MdExportError(f"onnxruntime failed to run {source.path.name}: {str(exc).splitlines()[0]}") from None
        trace = Path(session.end_profiling())
        del session  # its weights go before onnx_scopes reads the graph again
        events = json.loads(trace.read_text())
    per_node, run_totals = read_ort_trace(events, runs)
    if not per_node:
        raise MdExportError(f"onnxruntime recorded no kernel events for {source.path.name}")
    scopes = onnx_scopes(source.path)
    nodes = [NodeTime(node, op, onnx_module(node, scopes), us / 1e3 / runs) for node, (op, us) in per_node.items()]
    return Measured(nodes, runs, float(np.median(run_totals)) / 1e3, "median", float(np.median(walls)), inputs,
                    ["profiling adds a small cost per kernel; kernel totals exclude session overhead"])


# ---- LiteRT: TFLite benchmark_model -------------------------------------------------------------


def find_benchmark_model(binary: str) -> str:
    if not Path(binary).is_file() or not os.access(binary, os.X_OK):
        raise MdExportError(f"--binary {binary}: not an executable file")
    return binary


def _check_tflite(path: Path) -> list[str]:
    """Fail on a file LiteRT cannot load before starting the tool; its signature keys."""
    from ai_edge_litert.interpreter import Interpreter

    try:
        return list(Interpreter(model_path=str(path)).get_signature_list())
    except Exception as exc:
        raise MdExportError(f"cannot load LiteRT model {path.name}: {str(exc).splitlines()[0]}") from None


def benchmark_model_command(tool: str, source: Source, signatures: list[str], runs: int, warmup: int,
                            threads: int) -> list[str]:
    command = [tool, f"--graph={source.path}", f"--num_threads={threads}", f"--warmup_runs={warmup}",
               f"--num_runs={runs}", "--warmup_min_secs=0", "--min_secs=0",  # exactly the runs asked for
               "--enable_op_profiling=true", "--max_profiling_buffer_entries=200000",  # 1024 < a UNet's ops
               # XNNPACK would run the graph as one delegate node whose internal ops carry no tensor
               # names: the builtin kernels keep the per-node names the module mapping needs.
               "--use_xnnpack=false"]
    signature = (source.entry or {}).get("signature")
    if signature and len(signatures) > 1:
        command.append(f"--signature_to_run_for={signature}")
    return command


def run_benchmark_model(command: list[str], name: str) -> str:
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=3600)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise MdExportError(f"{TOOL} could not run on {name}: {exc}") from None
    text = done.stdout + "\n" + done.stderr  # TFLITE_LOG writes to stderr
    if done.returncode != 0:
        tail = [line for line in text.splitlines() if line.strip()][-3:]
        raise MdExportError(f"{TOOL} failed on {name} (exit {done.returncode}): {' | '.join(tail)}")
    return text


@dataclass
class OpRow:
    op_type: str
    name: str  # the "[output tensors]:node_index" the profiler prints
    ms: float  # per run: avg per call x calls per run


def parse_op_profile(text: str) -> list[OpRow]:
    """The primary graph's "Run Order" table after "Operator-wise Profiling Info for Regular Benchmark
    Runs" (TFLite's StatsCalculator layout: tab-separated columns node type, start, first, avg ms, %,
    cdf%, mem KB, times called, name). Warm-up runs are never in it: the tool profiles regular runs only."""
    lines = text.splitlines()
    start = next((i for i, line in enumerate(lines) if "Profiling Info for Regular Benchmark Runs" in line), None)
    if start is None:
        raise MdExportError(f"{TOOL} printed no operator-wise profile (was --enable_op_profiling ignored?)")
    header = next((i for i in range(start, len(lines)) if "Run Order" in lines[i]), None)
    if header is None:
        raise MdExportError(f"{TOOL} profile has no Run Order table")
    rows = []
    for line in lines[header + 2:]:  # skip the column header
        fields = line.split("\t")[1:]
        if len(fields) < 9:
            break  # the blank line that ends the table
        try:
            avg_ms, times_called = float(fields[3]), int(float(fields[7]))
        except ValueError:
            raise MdExportError(f"{TOOL} profile row not in the expected layout: {line.strip()[:120]}") from None
        rows.append(OpRow(fields[0].strip().split("/")[0], "\t".join(fields[8:]).strip(), avg_ms * times_called))
    if not rows:
        raise MdExportError(f"{TOOL} profile's Run Order table is empty")
    return rows


def _node_index(name: str) -> int:
    match = re.search(r":(\d+)$", name)
    return int(match.group(1)) if match else sys.maxsize


class LiteRTNames:
    """litert-torch names a tensor after the nn_module_stack of the op that made it:
    "pkg.Root/pkg.Level_1/pkg.Block_0/torch.nn.modules.conv.Conv2d_conv1;3", one "<class>_<last
    attribute>" per called module. Containers (ModuleList) are never called, so "down_blocks.1" and
    "up_blocks.1" both print as "UNetLevel_1"; walking the real module tree resolves the rest, and
    a remaining tie goes to the candidate nearest, in module order, to the previous node's module,
    since the converter keeps ops close to execution order.
    """

    def __init__(self, module) -> None:
        from torch import nn

        self.tree = dict(module.named_modules())
        self.position = {path: i for i, path in enumerate(self.tree)}
        self.label = {path: _class_name(type(m)) + (f"_{path.rsplit('.', 1)[-1]}" if path else "")
                      for path, m in self.tree.items()}
        self.by_label: dict[str, list[str]] = defaultdict(list)
        for path, label in self.label.items():
            self.by_label[label].append(path)
        self.containers = (nn.ModuleList, nn.ModuleDict)
        self.current = 0
        self.counts = {"exact": 0, "by_position": 0, "unmapped": 0, "graph": 0}

    def module(self, tensor_name: str) -> str:
        scope = self._scope(tensor_name)
        if scope is None:
            self.counts["graph"] += 1
            return GRAPH
        candidates = self._resolve(scope)
        if not candidates:
            self.counts["unmapped"] += 1
            return UNMAPPED
        chosen = min(candidates, key=lambda p: (abs(self.position[p] - self.current), self.position[p]))
        if not chosen:  # the root module itself: a top-level op, which says nothing about position
            self.counts["graph"] += 1
            return GRAPH
        self.counts["exact" if len(candidates) == 1 else "by_position"] += 1
        self.current = self.position[chosen]
        return chosen

    def _scope(self, tensor_name: str) -> str | None:
        """The first module scope in a (possibly fused, ";"-joined) tensor name, None if it has none."""
        root = self.label[""]
        for part in re.split(r"[;,]\s*", tensor_name):
            if part == root or part.startswith(root + "/"):
                return part
        return None

    def _resolve(self, scope: str) -> set[str]:
        paths = {""}
        for segment in scope.split("/")[1:]:
            paths = {q for p in paths for q in self.by_label.get(segment, ()) if self._child(p, q)}
            if not paths:
                return set()
        return paths

    def _child(self, parent: str, path: str) -> bool:
        """`path` is a called child of `parent`: below it through containers only."""
        if parent and not path.startswith(parent + "."):
            return False
        between = path[len(parent) + 1 if parent else 0:].split(".")[:-1]
        prefix = parent
        for part in between:
            prefix = f"{prefix}.{part}" if prefix else part
            if not isinstance(self.tree[prefix], self.containers):
                return False
        return True


def _class_name(cls: type) -> str:
    return cls.__qualname__ if cls.__module__ == "builtins" else f"{cls.__module__}.{cls.__qualname__}"


def source_module(source: Source):
    """The PyTorch network the artifact was exported from, structure only (meta device: no weights,
    no memory), when the manifest names its preset and component; None otherwise."""
    import torch

    from md_export.models import build_component, get_preset

    if source.entry is None or not source.manifest:
        return None
    preset_name = (source.manifest.get("source") or {}).get("preset")
    if not preset_name:
        return None
    try:
        with torch.device("meta"):
            return build_component(get_preset(preset_name), source.entry["component"])
    except Exception:  # a foreign or moved preset: names stay unmapped rather than guessed
        return None


def litert_modules(rows: list[OpRow], module) -> tuple[list[str], dict | None]:
    """Module per row (in node order, which the position tie-break needs) and the mapping counts."""
    order = sorted(range(len(rows)), key=lambda i: _node_index(rows[i].name))
    modules = [UNMAPPED] * len(rows)
    names = LiteRTNames(module) if module is not None else None
    for i in order:
        tensor_name = re.sub(r":\d+$", "", rows[i].name).strip("[]")
        if "Delegate" in rows[i].op_type:
            modules[i] = UNMAPPED  # a delegate partition spans many modules
        elif names is not None:
            modules[i] = names.module(tensor_name)
        else:
            modules[i] = UNMAPPED if ";" in tensor_name else GRAPH
    return modules, names.counts if names else None


def profile_litert_c_api(source: Source, runs: int, warmup: int, threads: int, seed: int) -> Measured:
    """The wheel's own LiteRT profiler (md_export.runtimes.litert_profiler): the XNNPACK operators a
    CPU CompiledModel runs, per call in run order. Node i is the i-th operator of every run."""
    from md_export.runtimes.litert_profiler import environment_note, profile_tflite

    signatures = _check_tflite(source.path)
    signature = (source.entry or {}).get("signature") if len(signatures) > 1 else None
    measured = profile_tflite(source.path, signature, runs, warmup, threads, seed)
    per_run: dict[int, list] = defaultdict(list)
    for event in measured.events:
        per_run[event.run].append(event)
    if len({len(events) for events in per_run.values()}) != 1:
        raise MdExportError(f"LiteRT ran a different number of operators per run on {source.path.name}: "
                            "its profile cannot be lined up by node")
    first = per_run[0]
    nodes = [NodeTime(f"{index:04d} {event.op_type}", event.op_type if event.delegated else f"{event.op_type} (builtin)",
                      UNMAPPED, sum(per_run[run][index].ms for run in per_run) / len(per_run))
             for index, event in enumerate(first)]
    builtin = sum(not event.delegated for event in first)
    notes = [environment_note(),
             "XNNPACK's operators carry no TFLite node or tensor name: no per-module view (pass --binary "
             f"{TOOL} for TFLite's builtin kernels by module)",
             f"{len(first) - builtin} operators inside XNNPACK, {builtin} TFLite builtin kernel(s) outside it "
             "(op types marked '(builtin)')",
             f"seeded random inputs (seed {seed}; op times do not depend on values)"]
    totals = [sum(event.ms for event in per_run[run]) for run in sorted(per_run)]
    return Measured(nodes, len(per_run), float(np.median(totals)), "median", float(np.median(measured.wall_ms)),
                    f"random (seed {seed})", notes)


def profile_litert(source: Source, runs: int, warmup: int, threads: int, binary: str | None) -> Measured:
    from .parsers import ParseError, parse_benchmark_model

    signatures = _check_tflite(source.path)
    tool = find_benchmark_model(binary)
    text = run_benchmark_model(benchmark_model_command(tool, source, signatures, runs, warmup, threads),
                               source.path.name)
    rows = parse_op_profile(text)
    modules, counts = litert_modules(rows, source_module(source))
    nodes = [NodeTime(row.name, row.op_type, module, row.ms) for row, module in zip(rows, modules)]
    try:
        timing = parse_benchmark_model(text)
        wall = timing["latency_ms"].get("p50") or timing["latency_ms"].get("mean")
        runs = timing.get("runs") or runs
    except ParseError:
        wall = None
    notes = [f"{TOOL} builtin kernels (XNNPACK off, so each node keeps its name); "
             "its own random inputs (op times do not depend on values)"]
    if counts is None:
        notes.append("no preset in a manifest beside the file: LiteRT scopes are not resolved to modules")
    elif counts["by_position"]:
        notes.append(f"{counts['by_position']} node(s) matched several same-shaped modules (down/up blocks): "
                     "resolved by position in the graph")
    return Measured(nodes, runs, sum(n.ms for n in nodes), "mean", wall, f"random ({TOOL})", notes)


# ---- the result -----------------------------------------------------------------------------------


def group(module: str, depth: int) -> str:
    if module in (GRAPH, UNMAPPED):
        return module
    return ".".join(module.split(".")[:depth])


def _rows(nodes: list[NodeTime], key, label: str, count: str) -> list[dict]:
    total = sum(n.ms for n in nodes) or 1.0
    sums: dict[str, list] = defaultdict(lambda: [0.0, 0])
    for node in nodes:
        sums[key(node)][0] += node.ms
        sums[key(node)][1] += 1
    rows = [{label: name, "ms": ms, "share": ms / total, count: n} for name, (ms, n) in sums.items()]
    return sorted(rows, key=lambda r: (-r["ms"], r[label]))


def build_result(source: Source, runtime: str, measured: Measured, threads: int, warmup: int, depth: int,
                 top: int) -> dict:
    nodes = measured.nodes
    top_nodes = sorted(nodes, key=lambda n: -n.ms)[:top]
    return {
        "artifact": str(source.path.resolve()),
        "runtime": runtime,
        "component": (source.entry or {}).get("component"),
        "precision": (source.entry or {}).get("precision"),
        "runs": measured.runs,
        "warmup": warmup,
        "threads": threads,
        "inputs": measured.inputs,
        "total_ms": measured.total_ms,
        "total_statistic": measured.total_statistic,
        "wall_p50_ms": measured.wall_p50_ms,
        "depth": depth,
        "by_op_type": _rows(nodes, lambda n: n.op_type, "op_type", "count"),
        "by_module": _rows(nodes, lambda n: group(n.module, depth), "module", "nodes"),
        "by_leaf_module": _rows(nodes, lambda n: n.module, "module", "nodes"),
        "top_nodes": [{"node": n.node, "op_type": n.op_type, "module": n.module, "ms": n.ms} for n in top_nodes],
        "notes": measured.notes,
    }


def profile(path: str | Path, runs: int = 5, warmup: int = 1, threads: int | None = None, depth: int = 2,
            top: int = 15, seed: int = 0, binary: str | None = None) -> dict:
    threads = threads or os.cpu_count() or 1
    source = open_source(path)
    if source.fmt == "onnx":
        return build_result(source, "onnxruntime", profile_onnx(source, runs, warmup, threads, seed), threads,
                            warmup, depth, top)
    # --binary: TFLite's benchmark_model with its builtin kernels, every node named and mapped to a
    # module; otherwise the wheel's own profiler, on the XNNPACK operators a CompiledModel runs
    measured = (profile_litert(source, runs, warmup, threads, binary) if binary
                else profile_litert_c_api(source, runs, warmup, threads, seed))
    return build_result(source, "litert", measured, threads, warmup, depth, top)


# ---- Markdown and chart ---------------------------------------------------------------------------


def _table(title: str, rows: list[dict], label: str, count: str, top: int) -> list[str]:
    lines = [f"| {title} | ms / run | share | nodes |", "|---|---:|---:|---:|"]
    for row in rows[:top]:
        lines.append(f"| {row[label]} | {row['ms']:.3f} | {row['share']:.1%} | {row[count]} |")
    if len(rows) > top:
        rest = rows[top:]
        lines.append(f"| ({len(rest)} more) | {sum(r['ms'] for r in rest):.3f} | "
                     f"{sum(r['share'] for r in rest):.1%} | {sum(r[count] for r in rest)} |")
    return lines + [""]


def markdown(result: dict, top: int) -> str:
    wall = "-" if result["wall_p50_ms"] is None else f"{result['wall_p50_ms']:.2f} ms"
    lines = [
        f"**{Path(result['artifact']).name}** on {result['runtime']}: {result['threads']} thread(s), "
        f"{result['runs']} timed run(s) after {result['warmup']} warm-up; inputs {result['inputs']}",
        "",
        f"Kernel time {result['total_ms']:.3f} ms per run ({result['total_statistic']}), wall p50 {wall}.",
        "",
    ]
    lines += _table("op type", result["by_op_type"], "op_type", "count", top)
    if any(row["module"] != UNMAPPED for row in result["by_module"]):  # else one "(unmapped)" row: the notes say why
        lines += _table(f"module (depth {result['depth']})", result["by_module"], "module", "nodes", top)
        lines += _table("leaf module", result["by_leaf_module"], "module", "nodes", top)
    lines += [f"- {note}" for note in result["notes"]]
    return "\n".join(lines) + "\n"


def chart_png(result: dict, top: int) -> bytes:
    """Two horizontal bar panels, ms per run: the top modules (at --depth) and the top op types."""
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [(f"module (depth {result['depth']})", result["by_module"][:top], "module"),
              ("op type", result["by_op_type"][:top], "op_type")]
    height = 0.32 * sum(max(len(rows), 2) for _, rows, _ in panels) + 2.0
    fig, axes = plt.subplots(2, 1, figsize=(9, height))
    color = RUNTIME_COLORS.get(result["runtime"], "#888888")
    for ax, (title, rows, label) in zip(axes, panels):
        ax.barh(range(len(rows)), [r["ms"] for r in rows], color=color)
        ax.set_yticks(range(len(rows)), [f"{r[label]} ({r['share']:.0%})" for r in rows], fontsize=8)
        ax.invert_yaxis()
        ax.set_xlabel("kernel time, ms per run")
        ax.set_title(title, fontsize=9)
    fig.suptitle(f"{Path(result['artifact']).name} on {result['runtime']}, {result['threads']} thread(s)",
                 fontsize=10)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    plt.close(fig)
    return buffer.getvalue()


def run_profile(args) -> int:
    from md_export.export.manifest import write_json_atomic

    from .report import check_target, write_bytes_atomic

    for target in (args.json, args.markdown, args.chart):
        if target:
            check_target(target)  # fail before the run, not after it
    for name, value, minimum in (("runs", args.runs, 1), ("warmup", args.warmup, 0), ("threads", args.threads, 1),
                                 ("top", args.top, 1), ("depth", args.depth, 1)):
        if value < minimum:
            raise MdExportError(f"--{name} must be >= {minimum}, got {value}")
    result = profile(args.artifact, args.runs, args.warmup, args.threads, args.depth, args.top, args.seed,
                     args.binary)
    text = markdown(result, args.top)
    print(text, end="")
    if args.json:
        write_json_atomic(Path(args.json), result)
    if args.markdown:
        write_bytes_atomic(args.markdown, text.encode())
    if args.chart:
        write_bytes_atomic(args.chart, chart_png(result, args.top))
    return 0
