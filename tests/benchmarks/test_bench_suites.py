"""The paper-table suite and the litert-benchmark cross-check, on tiny presets."""

import json
import shutil
import sys
from pathlib import Path

import pytest

from md_export.benchmarks.parsers import ParseError, parse_litert_benchmark_json
from md_export.benchmarks.schema import validate

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "benchmarks"


def test_paper_table_tiny(onnx_dir, tmp_path, cli, capsys):
    out = tmp_path / "paper"
    code = cli(["bench", "paper", "--out", str(out), "--preset", "mobilediffusion-tiny", "--baseline", "sd15-tiny",
                "--resolution", "64", "--artifacts", str(onnx_dir), "--runs", "1", "--warmup", "0", "--threads", "1",
                "--pipeline-runtimes", "onnxruntime", "--peak-size", "128", "--no-progress"])
    assert code == 0
    result = json.loads((out / "paper.json").read_text())
    validate(result)
    table = result["paper_table"]
    assert [r["component"] for r in table["rows"]] == ["text_encoder", "unet", "vae_decoder"]
    for row in table["rows"]:
        assert row["params"] > 0 and row["gflops"] > 0
        assert set(row["latency"]) == {"torch/fp32", "onnxruntime/fp32"}
    assert set(table["end_to_end"]) == {"pipeline@64/onnxruntime/fp32/1step/nocfg",
                                        "pipeline@64/onnxruntime/fp32/8step/cfg7.5"}
    ratio = table["unet_step_ratio"]["torch/fp32"]
    assert ratio["ratio"] == pytest.approx(ratio["sd15-tiny_ms"] / ratio["mobilediffusion-tiny_ms"], rel=1e-2)
    assert "sd15-tiny:unet@64/torch/fp32" in {i["name"] for i in result["items"]}
    pipeline = [i for i in result["items"] if i["level"] == "pipeline"]
    assert all(i["first_run_timed"] and i["runs"] == 1 for i in pipeline)
    for name, row in table["end_to_end"].items():  # the limit beside every end-to-end total
        assert row["limit_ms"] > 0 and row["total_over_limit"] == pytest.approx(row["p50_ms"] / row["limit_ms"], rel=1e-2)
    assert (out / "paper.png").read_bytes()[:4] == b"\x89PNG"
    text = (out / "paper.md").read_text()
    assert "| unet |" in text and "sd15-tiny ms" in text and "| limit ms | total / limit |" in text
    assert "paper.json" in capsys.readouterr().out


def test_paper_table_bad_runtime(tmp_path, cli, capsys):
    assert cli(["bench", "paper", "--out", str(tmp_path), "--pipeline-runtimes", "tensorrt"]) == 2
    assert "unknown tensorrt" in capsys.readouterr().err


def test_litert_benchmark_result_parser_on_captured_output():
    out = parse_litert_benchmark_json(json.loads((FIXTURES / "litert_benchmark_result.json").read_text()))
    assert out["latency_ms"]["p50"] == pytest.approx(7.36) and out["latency_ms"]["mean"] == pytest.approx(7.21)
    assert out["latency_ms"]["p90"] is None and out["init_ms"] == pytest.approx(55.6)
    assert out["runs"] == 5 and out["threads"] == 2 and out["signature"] == "unet_64"
    with pytest.raises(ParseError, match="median_ms"):
        parse_litert_benchmark_json({"latency": {}})


@pytest.mark.skipif(shutil.which("litert-benchmark") is None
                    and not (Path(sys.executable).parent / "litert-benchmark").exists(),
                    reason="litert-benchmark (ai-edge-litert) not installed")
def test_crosscheck_reports_both_medians(tflite_dir, tmp_path, cli):
    out = tmp_path / "x.json"
    code = cli(["bench", "crosscheck", str(tflite_dir / "vae_decoder.fp32.tflite"), "--threads", "1", "--runs", "5",
                "--warmup", "1", "--no-progress", "--json", str(out)])
    result = json.loads(out.read_text())
    validate(result)
    check = result["crosscheck"]
    assert check["harness_p50_ms"] > 0 and check["tool_median_ms"] > 0
    assert check["ratio"] == pytest.approx(check["harness_p50_ms"] / check["tool_median_ms"], rel=1e-3)
    assert code == (0 if check["agrees"] else 1)  # agreement itself is a timing: not asserted


def test_crosscheck_without_the_tool(tflite_dir, tmp_path, cli, monkeypatch, capsys):
    monkeypatch.setattr(shutil, "which", lambda name: None)
    monkeypatch.setattr(sys, "executable", str(tmp_path / "python"))
    assert cli(["bench", "crosscheck", str(tflite_dir / "vae_decoder.fp32.tflite"), "--runs", "1",
                "--no-progress"]) == 2
    assert "litert-benchmark not found" in capsys.readouterr().err


def test_crosscheck_needs_a_tflite(onnx_dir, cli, capsys):
    model = next(onnx_dir.glob("*.onnx"))
    assert cli(["bench", "crosscheck", str(model), "--no-progress"]) == 2
    assert "runs a .tflite" in capsys.readouterr().err
