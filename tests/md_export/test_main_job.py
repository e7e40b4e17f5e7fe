"""`md-export run`, the README's main job, on a tiny preset."""

import json

from md_export.cli import main


def test_main_job_writes_report_images_and_passes_parity(tmp_path, capsys):
    out = tmp_path / "job"
    code = main(["run", "--preset", "mobilediffusion-tiny", "--steps", "2", "--out", str(out)])  # all formats
    assert code == 0
    report = json.loads((out / "report.json").read_text())
    assert report["passed"] is True and report["parity"]["passed"] is True
    assert set(report["images"]) == {"torch", "onnx", "tflite"}
    for runtime in ("onnx", "tflite"):
        assert (out / f"{runtime}.png").exists()
        assert report["images"][runtime]["image_psnr_db_vs_torch"] > 40.0  # fp32 runtimes, same picture
    assert (out / "report.md").read_text().startswith("# md-export main job: mobilediffusion-tiny")
    assert (out / "artifacts" / "parity.md").exists()
    assert set(report["quantized"]) == {"onnx-static-int8", "tflite-dynamic-int8", "coreml-linear-int8"}
    assert set(report["benchmark"]) == {"artifacts", "onnx-static-int8", "tflite-dynamic-int8"}  # Core ML: Mac only
    assert (out / "bench" / "artifacts.png").exists()
    assert "report:" in capsys.readouterr().out
