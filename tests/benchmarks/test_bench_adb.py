"""The adb path against a stand-in `adb` on PATH that logs its argv and prints fixture output."""

import json
import os
import stat
import sys
import textwrap

from pathlib import Path

import pytest

from md_export.benchmarks.schema import validate

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "benchmarks"

STAND_IN = textwrap.dedent("""\
    #!{python}
    # Stand-in for adb: logs argv, answers like a phone, prints captured-format tool output.
    import json, os, sys
    argv = sys.argv[1:]
    with open(os.environ["ADB_LOG"], "a") as log:
        log.write(json.dumps(argv) + "\\n")
    mode = os.environ.get("ADB_MODE", "ok")
    serial = argv[1] if argv[:1] == ["-s"] else ""
    rest = argv[2:] if argv[:1] == ["-s"] else argv
    def gone():
        sys.stderr.write("error: device '%s' not found\\n" % serial)
        sys.exit(1)
    if mode == "unreachable":
        gone()
    if rest[:1] == ["get-state"]:
        print("device"); sys.exit(0)
    if rest[:2] == ["shell", "getprop"] or (rest[:1] == ["shell"] and rest[1].startswith("getprop")):
        prop = rest[-1].split()[-1]
        print({{"ro.product.model": "Pixel 8", "ro.product.cpu.abi": "arm64-v8a",
               "ro.build.version.release": "14", "ro.build.version.sdk": "34"}}.get(prop, "")); sys.exit(0)
    if rest[:1] == ["push"]:
        print("1 file pushed"); sys.exit(0)
    if rest[:1] == ["shell"] and ("--graph=" in rest[1] or " -m times " in rest[1]):  # the tool run
        if mode == "disconnect":
            sys.stderr.write("error: closed\\n"); sys.exit(1)
        if mode == "tool_fails":
            sys.stdout.write(open(os.environ["ADB_FAIL_FIXTURE"]).read()); sys.exit(1)
        sys.stdout.write(open(os.environ["ADB_FIXTURE"]).read()); sys.exit(0)
    sys.exit(0)
""")


@pytest.fixture
def adb(tmp_path, monkeypatch):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    script = bin_dir / "adb"
    script.write_text(STAND_IN.format(python=sys.executable))
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    log = tmp_path / "adb.log"
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("ADB_LOG", str(log))
    monkeypatch.setenv("ADB_FIXTURE", str(FIXTURES / "benchmark_model_recent.txt"))
    monkeypatch.setenv("ADB_FAIL_FIXTURE", str(FIXTURES / "benchmark_model_failed.txt"))

    def commands():
        return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []

    return commands


@pytest.fixture
def phone_files(tmp_path):
    model = tmp_path / "unet.fp32.tflite"
    model.write_bytes(b"TFL3 not a real model: the stand-in never reads it")
    tool = tmp_path / "benchmark_model"
    tool.write_bytes(b"\x7fELF stand-in")
    return model, tool


def test_adb_pushes_runs_and_parses(adb, phone_files, tmp_path, cli):
    model, tool = phone_files
    out = tmp_path / "phone.json"
    code = cli(["bench", "run", "--model", str(model), "--device", "adb:ABC123", "--binary", str(tool),
                "--threads", "4", "--warmup", "2", "--runs", "50", "--delegate", "gpu", "--json", str(out)])
    assert code == 0
    commands = adb()
    assert all(c[:2] == ["-s", "ABC123"] for c in commands)
    rest = [c[2:] for c in commands]
    assert rest[0] == ["get-state"]
    assert ["push", str(tool), "/data/local/tmp/md_bench/benchmark_model"] in rest
    assert ["push", str(model), "/data/local/tmp/md_bench/unet.fp32.tflite"] in rest
    assert ["shell", "chmod 755 /data/local/tmp/md_bench/benchmark_model"] in rest
    run = [r for r in rest if r[0] == "shell" and "--graph=" in r[1]]
    assert len(run) == 1
    assert run[0][1].split() == ["/data/local/tmp/md_bench/benchmark_model",
                                 "--graph=/data/local/tmp/md_bench/unet.fp32.tflite", "--num_threads=4",
                                 "--warmup_runs=2", "--num_runs=50", "--report_peak_memory_footprint=true",
                                 "--use_gpu=true"]
    # The binary is pushed before the model runs, the model before it is benchmarked.
    assert rest.index(["push", str(model), "/data/local/tmp/md_bench/unet.fp32.tflite"]) < rest.index(run[0])

    result = json.loads(out.read_text())
    validate(result)
    assert result["device"] == {"name": "adb:ABC123", "kind": "android", "machine": "arm64-v8a", "cpu": "Pixel 8",
                                "cores": None}
    assert result["os"]["system"] == "Android" and result["os"]["release"] == "14"
    item = result["items"][0]
    assert item["runtime"] == "litert" and item["delegate"] == "gpu" and item["threads"] == 4
    assert item["init_ms"] == pytest.approx(38.467) and item["first_ms"] == pytest.approx(83.235)
    assert item["latency_ms"]["p50"] == pytest.approx(79.42) and item["runs"] == 50
    assert item["peak_rss_mb"] == pytest.approx(95.2)
    assert len(item["sha256"]) == 64


def test_adb_perf_test_for_onnx(adb, tmp_path, monkeypatch, cli):
    monkeypatch.setenv("ADB_FIXTURE", str(FIXTURES / "perf_test.txt"))
    model = tmp_path / "unet.onnx"
    model.write_bytes(b"onnx stand-in")
    tool = tmp_path / "onnxruntime_perf_test"
    tool.write_bytes(b"stand-in")
    out = tmp_path / "r.json"
    assert cli(["bench", "run", "--model", str(model), "--device", "adb:X1", "--binary", str(tool),
                "--threads", "2", "--runs", "50", "--json", str(out)]) == 0
    run = [c[2:] for c in adb() if c[2:3] == ["shell"] and " -m times " in c[3]]
    assert run[0][1].split() == ["/data/local/tmp/md_bench/onnxruntime_perf_test", "-m", "times", "-r", "50",
                                 "-x", "2", "-I", "-s", "/data/local/tmp/md_bench/unet.onnx"]
    item = json.loads(out.read_text())["items"][0]
    assert item["runtime"] == "onnxruntime" and item["latency_ms"]["p90"] == pytest.approx(84.1)


def test_unreachable_device(adb, phone_files, monkeypatch, cli, capsys):
    monkeypatch.setenv("ADB_MODE", "unreachable")
    model, tool = phone_files
    assert cli(["bench", "run", "--model", str(model), "--device", "adb:GONE", "--binary", str(tool)]) == 2
    err = capsys.readouterr().err
    assert "md-export: error: device GONE is not reachable" in err and "Traceback" not in err
    assert [c[2:] for c in adb()] == [["get-state"]]  # nothing pushed


def test_device_disconnects_mid_run(adb, phone_files, monkeypatch, cli, capsys):
    monkeypatch.setenv("ADB_MODE", "disconnect")
    model, tool = phone_files
    assert cli(["bench", "run", "--model", str(model), "--device", "adb:ABC", "--binary", str(tool)]) == 2
    assert "device ABC disconnected during benchmark_model unet.fp32.tflite: error: closed" in capsys.readouterr().err


def test_tool_failing_on_the_phone(adb, phone_files, monkeypatch, cli, capsys):
    monkeypatch.setenv("ADB_MODE", "tool_fails")
    model, tool = phone_files
    assert cli(["bench", "run", "--model", str(model), "--device", "adb:ABC", "--binary", str(tool)]) == 2
    assert "benchmark_model unet.fp32.tflite failed on ABC" in capsys.readouterr().err


def test_missing_binary(adb, phone_files, tmp_path, cli, capsys):
    model, _ = phone_files
    assert cli(["bench", "run", "--model", str(model), "--device", "adb:ABC",
                "--binary", str(tmp_path / "nope" / "benchmark_model")]) == 2
    assert "benchmark binary" in capsys.readouterr().err and adb() == []
    assert cli(["bench", "run", "--model", str(model), "--device", "adb:ABC"]) == 2
    assert "needs --binary" in capsys.readouterr().err


def test_adb_not_installed(phone_files, tmp_path, monkeypatch, cli, capsys):
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    model, tool = phone_files
    assert cli(["bench", "run", "--model", str(model), "--device", "adb:ABC", "--binary", str(tool)]) == 2
    assert "adb not found on PATH" in capsys.readouterr().err


def test_artifact_dir_on_phone_uses_manifest_names(adb, tmp_path, cli):
    (tmp_path / "a").mkdir()
    model = tmp_path / "a" / "unet.fp32.tflite"
    model.write_bytes(b"stand-in")
    (tmp_path / "a" / "manifest.json").write_text(json.dumps({"source": {"kind": "preset", "preset": "x"}, "artifacts": [
        {"file": "unet.fp32.tflite", "component": "unet", "format": "tflite", "precision": "fp32", "resolution": 64,
         "sha256": "f" * 64, "inputs": [], "outputs": []},
        {"file": "unet.fp32.onnx", "component": "unet", "format": "onnx", "precision": "fp32", "resolution": 64,
         "sha256": "e" * 64, "inputs": [], "outputs": []}]}))
    tool = tmp_path / "benchmark_model"
    tool.write_bytes(b"stand-in")
    out = tmp_path / "r.json"
    assert cli(["bench", "run", "--artifacts", str(tmp_path / "a"), "--device", "adb:S", "--binary", str(tool),
                "--json", str(out)]) == 0
    items = json.loads(out.read_text())["items"]
    # Same item name as on the host, so `bench compare host.json phone.json` lines them up.
    assert [i["name"] for i in items] == ["unet@64/litert/fp32"] and items[0]["sha256"] == "f" * 64
    assert items[0]["gflops"] is None  # preset "x" is unknown: no FLOPs rather than a guess


def test_phone_items_get_flops_from_the_manifest_preset(adb, tmp_path, cli):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "unet.fp32.tflite").write_bytes(b"stand-in")
    (tmp_path / "a" / "manifest.json").write_text(json.dumps({
        "source": {"kind": "preset", "preset": "mobilediffusion-tiny"}, "artifacts": [
            {"file": "unet.fp32.tflite", "component": "unet", "format": "tflite", "precision": "fp32",
             "resolution": 64, "sha256": "f" * 64, "inputs": [], "outputs": []}]}))
    tool = tmp_path / "benchmark_model"
    tool.write_bytes(b"stand-in")
    out = tmp_path / "r.json"
    assert cli(["bench", "run", "--artifacts", str(tmp_path / "a"), "--device", "adb:S", "--binary", str(tool),
                "--json", str(out)]) == 0
    (item,) = json.loads(out.read_text())["items"]
    assert item["gflops"] > 0
    # The fixture's median is 79.42 ms.
    assert item["achieved_gflops_per_s"] == pytest.approx(item["gflops"] / 0.07942, rel=1e-2)
