"""The host harness end to end on tiny presets / artifacts. Timings are never asserted: only what
was measured, how it is described, and the error paths."""

import json
import platform

import pytest

from md_export.benchmarks.machine_peak import _best_seconds, _per_cycle, best_of_peaks, gemm_model, measure_machine_peak
from md_export.benchmarks.schema import validate
from md_export.export.manifest import read_manifest

FAST = ["--warmup", "0", "--runs", "2", "--no-peak", "--no-progress"]


def test_preset_torch_components_with_all_outputs(tmp_path, cli, capsys):
    out = tmp_path / "r"
    code = cli(["bench", "run", "--preset", "mobilediffusion-tiny", "--components", "text_encoder,unet",
                "--threads", "1", *FAST, "--json", f"{out}.json", "--markdown", f"{out}.md", "--chart", f"{out}.png"])
    assert code == 0
    result = json.loads((tmp_path / "r.json").read_text())
    validate(result)
    assert [i["name"] for i in result["items"]] == ["text_encoder/torch/fp32", "unet@64/torch/fp32"]
    assert result["settings"]["threads"] == 1 and result["settings"]["runs"] == 2
    for item in result["items"]:
        assert item["runs"] == 2 and item["threads"] == 1 and item["level"] == "component"
        assert item["gflops"] > 0 and item["achieved_gflops_per_s"] > 0
        assert item["fraction_of_peak"] is None  # --no-peak: nothing to hold it against
    assert "unet@64/torch/fp32" in (tmp_path / "r.md").read_text()
    assert (tmp_path / "r.png").read_bytes()[:4] == b"\x89PNG"
    assert "| unet@64/torch/fp32 | torch | fp32 | 1 |" in capsys.readouterr().out


def test_artifact_dir_components_and_pipeline(onnx_dir, tmp_path, cli):
    out = tmp_path / "r.json"
    code = cli(["bench", "run", "--artifacts", str(onnx_dir), "--level", "component,pipeline", "--steps", "1,2",
                "--guidance", "on,off", "--pipeline-warmup", "0", "--pipeline-runs", "1", "--threads", "1",
                *FAST, "--json", str(out)])
    assert code == 0
    result = json.loads(out.read_text())
    validate(result)
    manifest = read_manifest(onnx_dir)
    by_name = {i["name"]: i for i in result["items"]}
    components = [i for i in result["items"] if i["level"] == "component"]
    assert {i["component"] for i in components} == {"text_encoder", "unet", "vae_decoder"}
    hashes = {e["file"]: e["sha256"] for e in manifest["artifacts"]}
    for item in components:
        assert item["runtime"] == "onnxruntime" and item["sha256"] == hashes[item["file"]]
        assert item["inputs"] == "reference"  # the exporter's real seeded inputs
    # steps 1 never uses guidance; steps 2 with and without it.
    assert {n for n, i in by_name.items() if i["level"] == "pipeline"} == {
        "pipeline@64/onnxruntime/fp32/1step/nocfg", "pipeline@64/onnxruntime/fp32/2step/cfg7.5",
        "pipeline@64/onnxruntime/fp32/2step/nocfg"}
    guided = by_name["pipeline@64/onnxruntime/fp32/2step/cfg7.5"]
    assert set(guided["stages"]) == {"text_encoder", "unet", "unet_per_step", "vae_decoder", "total"}
    assert guided["stages"]["total"] == pytest.approx(
        guided["stages"]["text_encoder"] + guided["stages"]["unet"] + guided["stages"]["vae_decoder"], rel=0.05)
    # The exported UNet has batch 1: a guided step is two calls.
    step = by_name["unet_step@64/onnxruntime/fp32/cfg"]
    assert step["level"] == "unet_step" and step["calls_per_step"] == 2 and step["runs"] == 2  # 2 steps x 1 run
    # Work of a guided image: text encoder once (the empty negative prompt's embedding is computed
    # once per pipeline, in the warm-up) + UNet x steps x2 + decoder.
    unet = by_name["unet@64/onnxruntime/fp32"]["gflops"]
    text = by_name["text_encoder/onnxruntime/fp32"]["gflops"]
    vae = by_name["vae_decoder@64/onnxruntime/fp32"]["gflops"]
    assert guided["gflops"] == pytest.approx(text + 4 * unet + vae, rel=1e-3)


def test_single_tflite_artifact_litert(tflite_dir, tmp_path, cli):
    out = tmp_path / "r.json"
    assert cli(["bench", "run", "--model", str(tflite_dir / "vae_decoder.fp32.tflite"), "--threads", "1",
                *FAST, "--json", str(out)]) == 0
    (item,) = json.loads(out.read_text())["items"]
    assert item["name"] == "vae_decoder@64/litert/fp32" and item["runtime"] == "litert" and item["gflops"] > 0


def test_machine_peak_is_measured():
    peak = measure_machine_peak(threads=1, n=128)
    assert peak["fp32_gflops"] > 0 and peak["int8_gops"] > 0
    assert peak["gemm_size"] == 128 and "MatMulInteger" in peak["method"]
    assert peak["int8_over_fp32"] == pytest.approx(peak["int8_gops"] / peak["fp32_gflops"], rel=0.02)


def test_peak_probe_times_calls_for_its_minimum_window_and_combined_peaks_keep_the_best(monkeypatch):
    import time as time_module

    from md_export.benchmarks import machine_peak

    calls = []

    class Session:  # each call "takes" 0.1 s of the fake clock
        def __init__(self, *args, **kwargs):
            pass

        def run(self, outputs, feeds):
            calls.append(1)

    clock = iter(i * 0.05 for i in range(10_000))
    monkeypatch.setattr(time_module, "perf_counter", lambda: next(clock))
    monkeypatch.setattr("onnxruntime.InferenceSession", Session)
    assert _best_seconds(gemm_model("fp32", 8), {}, 1, runs=4, warmup=1, min_seconds=1.0) == pytest.approx(0.05)
    assert len(calls) == 1 + 20  # warm-up, then 20 x 0.05 s to fill the 1 s window (4 runs alone: 0.2 s)
    calls.clear()
    _best_seconds(gemm_model("fp32", 8), {}, 1, runs=4, warmup=0, min_seconds=1e9)
    assert len(calls) == machine_peak.PROBE_MAX_RUNS  # a slow host's probe still ends
    first = {"fp32_gflops": 100.0, "int8_gops": 900.0, "conv_fp32_gflops": 80.0, "conv_int8_gops": 200.0, "threads": 2}
    second = {"fp32_gflops": 120.0, "int8_gops": 600.0, "conv_fp32_gflops": 70.0, "conv_int8_gops": 260.0}
    best = best_of_peaks([first, second])
    assert (best["fp32_gflops"], best["int8_gops"], best["conv_fp32_gflops"], best["conv_int8_gops"]) == (120, 900, 80, 260)
    assert best["int8_over_fp32"] == 7.5 and best["conv_int8_over_fp32"] == 3.25 and best["threads"] == 2
    assert len(best["readings"]) == 2 and len(best_of_peaks([best, first])["readings"]) == 3


@pytest.mark.parametrize("kind", ["fp32", "int8"])
def test_peak_probe_holds_its_weights_as_an_initializer(kind):
    # onnxruntime pre-packs constant weights; a B fed as a graph input measured 35% under the real
    # int8 peak, and components then read above 100% of it
    model = gemm_model(kind, 64)
    assert [i.name for i in model.graph.input] == ["A"]
    assert [t.name for t in model.graph.initializer] == ["B"]


def test_theoretical_peak_per_cycle_from_flags():
    assert _per_cycle({"avx2", "fma"})[:2] == (32, 42)  # Zen 3: 2 x 256-bit FMA; int8 without VNNI
    assert _per_cycle({"avx2", "avx512f", "avx512_vnni"})[:2] == (64, 256)
    assert _per_cycle({"avx2", "avx512f", "avx512_vnni", "amx_int8"})[1] == 2048


def test_peak_fraction_reported_when_measured(tmp_path, cli):
    out = tmp_path / "r.json"
    assert cli(["bench", "run", "--preset", "mobilediffusion-tiny", "--components", "vae_decoder", "--threads", "1",
                "--warmup", "0", "--runs", "1", "--peak-size", "128", "--no-progress", "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["machine_peak"]["fp32_gflops"] > 0
    item = result["items"][0]
    assert item["fraction_of_peak"] == pytest.approx(
        item["achieved_gflops_per_s"] / result["machine_peak"]["fp32_gflops"], rel=1e-2)


def test_ctrl_c_keeps_what_was_measured(tmp_path, cli, monkeypatch, capsys):
    from md_export.runtimes import torch_runner

    original = torch_runner.TorchRunner.run
    calls = {"n": 0}

    def run(self, feeds):
        calls["n"] += 1
        if calls["n"] == 4:  # text encoder: first + 2 timed = 3 calls; Ctrl-C in the UNet's first call
            raise KeyboardInterrupt
        return original(self, feeds)

    monkeypatch.setattr(torch_runner.TorchRunner, "run", run)
    out = tmp_path / "r.json"
    code = cli(["bench", "run", "--preset", "mobilediffusion-tiny", "--components", "text_encoder,unet",
                "--threads", "1", *FAST, "--json", str(out)])
    assert code == 130
    result = json.loads(out.read_text())
    validate(result)
    assert result["interrupted"] is True
    assert [i["name"] for i in result["items"]] == ["text_encoder/torch/fp32"]
    captured = capsys.readouterr()
    assert "text_encoder/torch/fp32" in captured.out and "interrupted" in captured.err


@pytest.mark.parametrize("argv, message", [
    (["--preset", "nope"], "unknown preset"),
    (["--artifacts", "/nonexistent/dir"], "no manifest.json"),
    (["--preset", "mobilediffusion-tiny", "--runtime", "onnxruntime"], "export it and pass --artifacts"),
    (["--preset", "mobilediffusion-tiny", "--runs", "0"], "--runs must be >= 1"),
    (["--preset", "mobilediffusion-tiny", "--level", "galaxy"], "--level"),
    (["--preset", "mobilediffusion-tiny", "--level", "pipeline", "--steps", "0"], "--steps must be >= 1"),
    (["--preset", "mobilediffusion-tiny", "--device", "tpu:0"], "--device 'tpu:0'"),
    (["--model", "/nonexistent/m.tflite"], "does not exist"),
    ([], "give exactly one of"),
    (["--preset", "mobilediffusion-tiny", "--json", "/nonexistent/dir/r.json", "--components", "text_encoder"],
     "does not exist"),
])
def test_user_errors_are_one_line(argv, message, cli, capsys):
    assert cli(["bench", "run", *FAST, *argv]) == 2  # argv last: its --runs overrides FAST's
    err = capsys.readouterr().err
    assert err.startswith("md-export: error:") and message in err and "Traceback" not in err


def test_artifact_filters_that_match_nothing(onnx_dir, cli, capsys):
    assert cli(["bench", "run", "--artifacts", str(onnx_dir), "--precision", "int8", *FAST]) == 2
    assert "nothing to benchmark" in capsys.readouterr().err


@pytest.mark.skipif(platform.system() == "Darwin", reason="the refusal is for machines without Core ML")
def test_mac_target_needs_macos(onnx_dir, cli, capsys):
    assert cli(["bench", "run", "--artifacts", str(onnx_dir), "--device", "mac", *FAST]) == 2
    assert "needs macOS" in capsys.readouterr().err
    assert cli(["bench", "run", "--artifacts", str(onnx_dir), "--runtime", "coreml", *FAST]) == 2
    assert "only on macOS" in capsys.readouterr().err


def test_unwritable_output_fails_before_measuring(tmp_path, cli, capsys):
    assert cli(["bench", "run", "--preset", "mobilediffusion-tiny", *FAST,
                "--chart", str(tmp_path / "missing" / "c.png")]) == 2
    captured = capsys.readouterr()
    assert "does not exist" in captured.err and captured.out == ""  # no table: nothing was measured


def test_int8_speedup_is_held_against_the_probe_and_its_amdahl_bound():
    from md_export.benchmarks.int8_speedup import hold_against

    row = {"speedup": 2.0, "fp32_gemm_time_share": 0.9}
    hold_against(row, 15.0)
    # 90% of the time sped up 15x, 10% not: 1 / (0.1 + 0.06) = 6.25x at most
    assert row["amdahl_bound"] == pytest.approx(6.25, abs=0.01)
    assert row["share_of_probe_ratio"] == pytest.approx(2.0 / 15.0, abs=1e-3)
    assert row["share_of_amdahl_bound"] == pytest.approx(0.32, abs=1e-3)


def test_kernel_bound_speeds_convs_up_by_the_conv_probe_only():
    from md_export.benchmarks.int8_speedup import hold_against

    row = {"speedup": 2.0, "fp32_gemm_time_share": 0.9, "fp32_conv_time_share": 0.6}
    hold_against(row, 15.0, 4.0)
    # 60% conv time at 4x, 30% MatMul time at 15x, 10% float: 1 / (0.1 + 0.15 + 0.02) = 3.70x
    assert row["kernel_bound"] == pytest.approx(3.70, abs=0.01)
    assert row["share_of_kernel_bound"] == pytest.approx(2.0 / 3.7037, abs=1e-3)
    assert row["amdahl_bound"] == pytest.approx(6.25, abs=0.01)  # the GEMM-only bound is kept beside it


def test_conv_probe_is_one_quantized_conv_kernel_with_initializer_weights(tmp_path):
    # what the conv ratio times: onnxruntime's QLinearConv on uint8 in and out, nothing else
    import onnx
    import onnxruntime as ort

    from md_export.benchmarks.machine_peak import conv_model

    model = conv_model("int8", channels=16, side=8)
    assert {i.name for i in model.graph.initializer} >= {"Wq"}
    assert [i.name for i in model.graph.input] == ["X"]
    options = ort.SessionOptions()
    options.optimized_model_filepath = str(tmp_path / "opt.onnx")
    options.log_severity_level = 3
    ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    ops = [n.op_type for n in onnx.load(str(tmp_path / "opt.onnx")).graph.node]
    assert ops.count("QLinearConv") == 1 and not {"Conv", "DequantizeLinear", "QuantizeLinear"} & set(ops), ops


def test_artifacts_are_hashed_before_the_init_clock_starts(onnx_dir, cli, monkeypatch):
    # init_ms is what the runtime needs to load a model; checking its sha256 (seconds for a 1.5 GB
    # UNet) happens before: no hash may fall between the loads that one init_ms covers
    from md_export.benchmarks import pipeline_jobs
    from md_export.benchmarks.targets import host
    from md_export.runtimes import open as runtime_open

    events = []
    original_verify, original_load = runtime_open.verify_file, host.load_runner

    def verify(directory, entry):
        events.append(("verify", entry["component"]))
        return original_verify(directory, entry)

    def load(path, fmt, entry, settings, *cache):
        events.append(("load", entry["component"] if entry else path.name))
        return original_load(path, fmt, entry, settings, *cache)

    monkeypatch.setattr(runtime_open, "verify_file", verify)
    monkeypatch.setattr(host, "load_runner", load)
    monkeypatch.setattr(pipeline_jobs, "load_runner", load)
    assert cli(["bench", "run", "--artifacts", str(onnx_dir), "--level", "component,pipeline", "--steps", "1",
                "--pipeline-warmup", "0", "--pipeline-runs", "1", "--threads", "1", *FAST]) == 0
    kinds = [kind for kind, _ in events]
    components = kinds.index("verify", kinds.index("load"))  # the component jobs: all hashed, then loaded
    assert set(kinds[:3]) == {"verify"} and "verify" not in kinds[3:components]
    # the pipeline's three networks: hashed, then loaded (cold, writing the ort cache, from it)
    assert kinds[components:components + 3] == ["verify"] * 3 and set(kinds[components + 3:]) == {"load"}
