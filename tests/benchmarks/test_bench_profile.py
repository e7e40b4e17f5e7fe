"""`md-export bench profile` on tiny exports: per op type / per module structure, never timings.

onnxruntime runs for real, and so does LiteRT through the ai-edge-litert wheel's own profiler (its
C API). TFLite's native benchmark_model (--binary: builtin kernels, per module), which no package
here ships, is replaced by a stand-in that prints the tool's op-profiling layout for the real ops
of a real tiny .tflite (the node names, the part the module mapping reads, are genuine; the
numbers are made up and never asserted).
"""

import json
import stat
from collections import Counter
import sys
import textwrap

import pytest
import torch
from torch import nn

from md_export.benchmarks.profile import (GRAPH, UNMAPPED, LiteRTNames, _class_name, onnx_module, parse_op_profile,
                                read_ort_trace)
from md_export.errors import MdExportError
from md_export.models import build_component, get_preset

PRESET = "mobilediffusion-tiny"
# Shares are each row's ms over the sum of the same rows' ms: only float rounding separates their
# sum from 1, far below this.
SHARE_TOLERANCE = 1e-6


def modules_of(component: str) -> dict[str, nn.Module]:
    with torch.device("meta"):  # structure only: the names are what the test checks
        return dict(build_component(get_preset(PRESET), component).named_modules())


def check_rows(result: dict, named: dict) -> None:
    for key, label in (("by_op_type", "op_type"), ("by_module", "module"), ("by_leaf_module", "module")):
        rows = result[key]
        assert rows and sum(r["share"] for r in rows) == pytest.approx(1.0, abs=SHARE_TOLERANCE)
        assert [r["ms"] for r in rows] == sorted((r["ms"] for r in rows), reverse=True)
        assert all(r["ms"] >= 0 and r[label] for r in rows)
    nodes = sum(r["count"] for r in result["by_op_type"])
    assert nodes == sum(r["nodes"] for r in result["by_module"]) == sum(r["nodes"] for r in result["by_leaf_module"])
    modules = [r["module"] for r in result["by_module"] + result["by_leaf_module"]]
    modules += [n["module"] for n in result["top_nodes"]]
    unknown = [m for m in modules if m not in (GRAPH, UNMAPPED) and m not in named]
    assert not unknown, f"not modules of the network: {unknown[:5]}"
    for row in result["by_module"]:
        assert row["module"] in (GRAPH, UNMAPPED) or len(row["module"].split(".")) <= result["depth"]


def test_onnx_unet_profile_per_module_and_op_type(onnx_dir, tmp_path, cli, capsys):
    out = tmp_path / "p"
    code = cli(["bench", "profile", str(onnx_dir / "unet_64.fp32.onnx"), "--runs", "2", "--warmup", "1",
                "--threads", "1", "--depth", "4", "--top", "5",
                "--json", f"{out}.json", "--markdown", f"{out}.md", "--chart", f"{out}.png"])
    assert code == 0
    result = json.loads((tmp_path / "p.json").read_text())
    assert {"artifact", "runtime", "runs", "threads", "total_ms", "wall_p50_ms", "by_op_type", "by_module",
            "top_nodes"} <= set(result)
    assert result["runtime"] == "onnxruntime" and result["runs"] == 2 and result["threads"] == 1
    assert result["inputs"] == "reference" and result["component"] == "unet"
    assert result["total_ms"] > 0 and result["wall_p50_ms"] > 0
    named = modules_of("unet")
    check_rows(result, named)
    leaves = {r["module"] for r in result["by_leaf_module"]}
    assert UNMAPPED not in leaves  # every ONNX node either has a scope or is graph-level
    assert any(m.endswith(".attn2.to_q") for m in leaves) and any(".resnets." in m for m in leaves)
    assert len(result["top_nodes"]) == 5 and {"node", "op_type", "module", "ms"} <= set(result["top_nodes"][0])
    printed = capsys.readouterr().out
    assert "| op type | ms / run | share | nodes |" in printed and "| module (depth 4) |" in printed
    assert printed == (tmp_path / "p.md").read_text()
    assert (tmp_path / "p.png").read_bytes()[:4] == b"\x89PNG"


def test_ort_trace_counts_only_the_timed_runs():
    def node(name, ts, dur, op="Conv"):
        return {"cat": "Node", "name": f"{name}_kernel_time", "ts": ts, "dur": dur, "args": {"op_name": op}}

    events = [
        {"cat": "Session", "name": "model_run", "ts": 0, "dur": 100},  # warm-up
        node("/conv_in/Conv", 10, 90),
        {"cat": "Session", "name": "model_run", "ts": 200, "dur": 100},
        node("/conv_in/Conv", 210, 30), {"cat": "Node", "name": "/conv_in/Conv_fence_before", "ts": 209, "dur": 0},
        node("/Mul/QuickGeluFusion/", 250, 10, "QuickGelu"),
        {"cat": "Session", "name": "model_run", "ts": 400, "dur": 100},
        node("/conv_in/Conv", 410, 50), node("/Mul/QuickGeluFusion/", 470, 10, "QuickGelu"),
    ]
    per_node, totals = read_ort_trace(events, runs=2)
    assert per_node == {"/conv_in/Conv": ("Conv", 80), "/Mul/QuickGeluFusion/": ("QuickGelu", 20)}
    assert totals == [40, 60]


def test_onnx_runtime_names_map_to_the_files_scopes():
    scopes = {"conv_in", "down_blocks.1.attentions.0.transformer_blocks.0.attn2", "up_blocks.0.resnets.1.conv1"}
    assert onnx_module("/conv_in/Conv_output_0_nchwc", scopes) == "conv_in"
    assert onnx_module("/down_blocks.1/attentions.0/transformer_blocks.0/attn2/MatMul/MatMulScaleFusion/",
                       scopes) == "down_blocks.1.attentions.0.transformer_blocks.0.attn2"
    assert onnx_module("/up_blocks.0/resnets.1/conv1/Conv_token_12", scopes) == "up_blocks.0.resnets.1.conv1"
    assert onnx_module("/Mul/QuickGeluFusion/", scopes) == GRAPH
    assert onnx_module("Reorder_17", scopes) == GRAPH


def litert_scope(named: dict, path: str) -> str:
    """The name litert-torch gives an op of `path`: one "<class>_<attr>" per called module."""
    chain, prefix = [_class_name(type(named[""]))], ""
    for part in path.split("."):
        prefix = f"{prefix}.{part}" if prefix else part
        if not isinstance(named[prefix], (nn.ModuleList, nn.ModuleDict)):
            chain.append(f"{_class_name(type(named[prefix]))}_{part}")
    return "/".join(chain) + ";3"


def test_litert_scopes_resolve_to_unet_modules_down_and_up():
    """Down and up levels print the same scope ("UNetLevel_1/ResnetBlock_0/..."): in graph order the
    position tie-break still lands each op in its own block."""
    named = modules_of("unet")
    mapper = LiteRTNames(build_component_meta("unet"))
    leaves = [p for p, m in named.items() if p and not list(m.children())]
    resolved = [mapper.module(litert_scope(named, p)) for p in leaves]
    assert resolved == leaves
    assert mapper.counts["by_position"] > 0 and mapper.counts["unmapped"] == 0
    assert LiteRTNames(build_component_meta("unet")).module("unet_64_output_0_output") == GRAPH


def build_component_meta(component: str):
    with torch.device("meta"):
        return build_component(get_preset(PRESET), component)


STAND_IN = textwrap.dedent("""\
    #!{python}
    # Stand-in for TFLite's benchmark_model: logs argv, prints a captured-layout op profile.
    import json, os, sys
    with open(os.environ["BM_LOG"], "a") as log:
        log.write(json.dumps(sys.argv[1:]) + "\\n")
    sys.stderr.write(open(os.environ["BM_OUTPUT"]).read())
""")


def _stats_row(op: str, avg_ms: float, name: str) -> str:
    # StatsCalculator's layout: tab, right-aligned fixed-width columns, the name last.
    return (f"\t{op:>24}\t{0.0:>17.3f}\t{avg_ms:>9.3f}\t{avg_ms:>9.3f}\t{1.0:>7.3f}%\t{1.0:>7.3f}%"
            f"\t{0.0:>10.3f}\t{1:>9}\t{name}")


def fake_op_profile(tflite_path) -> str:
    """Run Order rows named as the profiler names them, "[output tensors]:node index", for every op."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(tflite_path))
    tensors = {t["index"]: t["name"] for t in interpreter.get_tensor_details()}
    header = ("\t             [node type]\t          [start]\t  [first]\t [avg ms]\t     [%]\t  [cdf%]"
              "\t  [mem KB]\t[times called]\t[Name]")
    rows = [_stats_row(op["op_name"], 0.01 * (1 + op["index"] % 7),
                       "[" + ", ".join(tensors[i] for i in op["outputs"]) + f"]:{op['index']}")
            for op in interpreter._get_ops_details()]
    return "\n".join([
        "INFO: STARTING!",
        "INFO: count=1 first=9000 curr=9000 min=9000 max=9000 avg=9000 std=0",
        "INFO: count=2 first=8000 curr=8000 min=7000 max=9000 avg=8000 std=1000 p5=7000 median=8000 p95=9000",
        "INFO: Inference timings in us: Init: 5000, First inference: 9000, Warmup (avg): 9000, Inference (avg): 8000",
        "INFO: Profiling Info for Benchmark Initialization:",
        "============================== Run Order ==============================", header,
        _stats_row("AllocateTensors", 1.5, "AllocateTensors/0"), "",
        "Timings (microseconds): count=1 curr=1500", "",
        "Operator-wise Profiling Info for Regular Benchmark Runs:",
        "============================== Run Order ==============================", header, *rows, "",
        "============================== Top by Computation Time ==============================", header,
        *rows[:3], "", f"Number of nodes executed: {len(rows)}", "",
    ]) + "\n"


@pytest.fixture
def benchmark_model(tmp_path, tflite_dir, monkeypatch):
    script = tmp_path / "benchmark_model"
    script.write_text(STAND_IN.format(python=sys.executable))
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    output = tmp_path / "bm_output.txt"
    output.write_text(fake_op_profile(tflite_dir / "vae_decoder.fp32.tflite"))
    monkeypatch.setenv("BM_LOG", str(tmp_path / "bm.log"))
    monkeypatch.setenv("BM_OUTPUT", str(output))
    return script


def test_litert_profile_through_benchmark_model(tflite_dir, benchmark_model, tmp_path, cli):
    out = tmp_path / "p.json"
    code = cli(["bench", "profile", str(tflite_dir / "vae_decoder.fp32.tflite"), "--binary", str(benchmark_model),
                "--runs", "2", "--warmup", "1", "--threads", "1", "--json", str(out)])
    assert code == 0
    (argv,) = [json.loads(line) for line in (tmp_path / "bm.log").read_text().splitlines()]
    assert {"--enable_op_profiling=true", "--num_runs=2", "--warmup_runs=1", "--num_threads=1",
            "--use_xnnpack=false"} <= set(argv)
    assert f"--graph={tflite_dir / 'vae_decoder.fp32.tflite'}" in argv
    result = json.loads(out.read_text())
    assert result["runtime"] == "litert" and result["runs"] == 2 and result["total_statistic"] == "mean"
    assert result["wall_p50_ms"] == pytest.approx(8.0)  # the tool's median, us -> ms
    assert all(r["op_type"] != "AllocateTensors" for r in result["by_op_type"])  # init section skipped
    check_rows(result, modules_of("vae_decoder"))
    leaves = {r["module"]: r for r in result["by_leaf_module"]}
    assert UNMAPPED not in leaves
    assert sum(r["share"] for m, r in leaves.items() if m != GRAPH) > 0.9  # nearly every op has its module


def test_litert_profile_through_the_wheels_own_profiler(tflite_dir, tmp_path, cli):
    """No benchmark_model needed: LiteRT's own profiler, through the wheel's C API, times the
    operators the real tiny decoder runs in XNNPACK; each of its convolutions is one operator per run."""
    from ai_edge_litert.interpreter import Interpreter

    decoder = str(tflite_dir / "vae_decoder.fp32.tflite")
    out = tmp_path / "p.json"
    assert cli(["bench", "profile", decoder, "--runs", "2", "--warmup", "1", "--threads", "1",
                "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["runtime"] == "litert" and result["runs"] == 2 and result["total_statistic"] == "median"
    check_rows(result, modules_of("vae_decoder"))
    graph = Counter(op["op_name"] for op in Interpreter(model_path=decoder)._get_ops_details())
    rows = {r["op_type"]: r["count"] for r in result["by_op_type"]}
    # XNNPACK's own operators: the decoder's convolutions (a 1x1 one may run as a Fully Connected)
    assert 0 < sum(n for op, n in rows.items() if op.startswith("Convolution (NHWC")) <= graph["CONV_2D"]
    builtin = {op.removesuffix(" (builtin)"): n for op, n in rows.items() if op.endswith(" (builtin)")}
    assert all(0 < n <= graph[op] for op, n in builtin.items())  # kernels left outside XNNPACK: real ops of the graph
    assert sum(builtin.values()) < sum(rows.values())  # most of it runs in XNNPACK
    assert all(r["module"] == UNMAPPED for r in result["by_module"])  # XNNPACK keeps no node names, and says so
    assert any("no per-module view" in note for note in result["notes"])
    # operators run inside the timed call: their sum per run cannot pass the call's wall time
    # (0.2 ms: the profiler rounds each of the decoder's ~100 events to whole microseconds)
    assert 0 < result["total_ms"] <= result["wall_p50_ms"] + 0.2


def test_op_profile_missing_is_an_error():
    with pytest.raises(MdExportError, match="no operator-wise profile"):
        parse_op_profile("INFO: count=2 first=1 curr=1 min=1 max=1 avg=1 std=0\n")


@pytest.mark.parametrize("name, content", [
    ("missing.onnx", None),
    ("notes.txt", b"not a model"),
    ("broken.onnx", b"\x00garbage, not a protobuf"),
    ("broken.tflite", b"TFL3 truncated"),
])
def test_bad_artifact_is_one_line_and_nonzero(tmp_path, capsys, name, content):
    from md_export.cli import main

    path = tmp_path / name
    if content is not None:
        path.write_bytes(content)
    assert main(["bench", "profile", str(path), "--runs", "1"]) != 0
    err = capsys.readouterr().err.strip()
    assert err.startswith("md-export: error:") and "Traceback" not in err and len(err.splitlines()) == 1
    assert name in err


def test_bad_options_fail_before_running(onnx_dir, tmp_path, cli):
    artifact = str(onnx_dir / "vae_decoder_64.fp32.onnx")
    assert cli(["bench", "profile", artifact, "--runs", "0"]) == 2
    assert cli(["bench", "profile", artifact, "--json", str(tmp_path / "no" / "such" / "dir.json")]) == 2
