"""Parity metrics, typed failures, and what a broken artifact directory does to `md-export parity`."""

import json
import shutil

import numpy as np
import pytest

from md_export.cli import main
from md_export.export import export_preset
from md_export.export.manifest import read_manifest, write_json_atomic
from md_export.parity import check_directory, compare, psnr_db
from md_export.runtimes import ArtifactLoadError, InputMismatchError, open_artifact
from md_export.models import get_preset


def test_psnr_is_apples_formula():
    reference = np.array([2.0, -4.0, 1.0, 0.0])
    actual = reference + np.array([0.1, -0.1, 0.1, -0.1])
    assert psnr_db(reference, actual) == pytest.approx(20 * np.log10(4.0 / 0.1))
    assert psnr_db(reference, reference) == 200.0  # exact match: capped, JSON-safe


def test_compare_metrics():
    metrics = compare(np.array([1.0, 0.0]), np.array([1.0, 0.5]))
    assert metrics["max_abs"] == pytest.approx(0.5) and metrics["mean_abs"] == pytest.approx(0.25)
    assert metrics["cosine"] == pytest.approx(1 / np.sqrt(1.25))


@pytest.fixture(scope="module")
def small_export(tmp_path_factory):
    out = tmp_path_factory.mktemp("small")
    export_preset(get_preset("mobilediffusion-tiny"), ["vae_decoder"], ["onnx", "tflite"], ["fp32"], out)
    return out


@pytest.fixture
def export_copy(small_export, tmp_path):
    target = tmp_path / "copy"
    shutil.copytree(small_export, target)
    return target


def test_parity_cli_passes_and_writes_reports(small_export, capsys):
    assert main(["parity", str(small_export), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["passed"] is True and len(report["artifacts"]) == 2
    assert (small_export / "parity.md").read_text().count("passed") >= 2


def test_truncated_artifact_fails_with_its_name(export_copy, capsys):
    onnx_file = export_copy / "vae_decoder_64.fp32.onnx"
    onnx_file.write_bytes(onnx_file.read_bytes()[:1000])
    assert main(["parity", str(export_copy), "--json"]) == 1  # parity failure exit code
    report = json.loads(capsys.readouterr().out)
    assert report["passed"] is False
    broken = next(a for a in report["artifacts"] if a["file"] == "vae_decoder_64.fp32.onnx")
    assert broken["status"] == "error" and "sha256" in broken["violations"][0]
    assert next(a for a in report["artifacts"] if a["format"] == "tflite")["status"] == "passed"


def test_corrupt_file_with_matching_manifest_is_a_load_error(export_copy):
    tflite = export_copy / "vae_decoder.fp32.tflite"
    tflite.write_bytes(b"not a flatbuffer" * 10)
    entry = next(e for e in read_manifest(export_copy)["artifacts"] if e["format"] == "tflite")
    with pytest.raises(ArtifactLoadError, match="cannot load LiteRT model vae_decoder.fp32.tflite"):
        open_artifact(export_copy, entry, verify=False)


def test_wrong_input_shape_and_name_are_named(small_export):
    entry = next(e for e in read_manifest(small_export)["artifacts"] if e["format"] == "onnx")
    runner = open_artifact(small_export, entry)
    with pytest.raises(InputMismatchError, match=r"input 'latent' has shape \(1, 4, 9, 9\)"):
        runner.run({"latent": np.zeros((1, 4, 9, 9), np.float32)})
    with pytest.raises(InputMismatchError, match="missing input 'latent'"):
        runner.run({"z": np.zeros((1, 4, 8, 8), np.float32)})


def test_output_off_the_reference_is_a_hard_failure(export_copy):
    reference = export_copy / "reference" / "vae_decoder_64.npz"
    data = dict(np.load(reference))
    data["output:image"] = data["output:image"] + 0.05  # what a wrong kernel would look like
    np.savez(reference, **data)
    report = check_directory(export_copy)
    assert not report.passed
    assert all(a.status == "failed" for a in report.artifacts)
    assert any("max abs error" in v for v in report.artifacts[0].violations)


def test_missing_manifest_and_bad_json_are_one_line_errors(tmp_path, capsys):
    assert main(["parity", str(tmp_path)]) == 2
    assert "no manifest.json" in capsys.readouterr().err
    (tmp_path / "manifest.json").write_text("{nope")
    assert main(["parity", str(tmp_path)]) == 2
    assert "not valid JSON" in capsys.readouterr().err


def test_export_failure_leaves_the_directory_untouched(export_copy, capsys):
    before = sorted(p.name for p in export_copy.iterdir())
    manifest = read_manifest(export_copy)
    code = main(["export", "--preset", "mobilediffusion-tiny", "--components", "vae_decoder", "--formats", "onnx",
                 "--resolution", "60", "--out", str(export_copy)])
    assert code == 2 and "not a multiple of 32" in capsys.readouterr().err
    assert sorted(p.name for p in export_copy.iterdir()) == before
    assert read_manifest(export_copy) == manifest
    write_json_atomic(export_copy / "manifest.json", manifest)  # the writer itself is atomic too


def test_an_entry_without_tolerance_is_a_clear_error_naming_file_and_key(export_copy, capsys):
    manifest = read_manifest(export_copy)
    del manifest["artifacts"][0]["tolerance"]
    write_json_atomic(export_copy / "manifest.json", manifest)
    (export_copy / "parity.md").write_text("earlier report\n")
    assert main(["parity", str(export_copy)]) == 2
    err = capsys.readouterr().err
    assert f"{export_copy / 'manifest.json'}: entry {manifest['artifacts'][0]['file']} has no 'tolerance'" in err
    assert (export_copy / "parity.md").read_text() == "earlier report\n"


def test_bad_threads_are_refused_before_anything_runs(export_copy, capsys):
    (export_copy / "parity.md").write_text("earlier report\n")
    for threads in ("-1", "0"):
        assert main(["parity", str(export_copy), "--threads", threads]) == 2
        assert f"--threads must be at least 1, got {threads}" in capsys.readouterr().err
    assert (export_copy / "parity.md").read_text() == "earlier report\n"  # not rewritten with false failures
    assert main(["parity", str(export_copy), "--threads", "1"]) == 0  # a good value still runs every artifact


def test_pipeline_gate_that_compared_nothing_fails(export_copy, capsys):
    # vae_decoder only: no format holds the three networks of a pipeline
    assert main(["parity", str(export_copy), "--pipeline", "--json"]) == 1
    captured = capsys.readouterr()
    assert json.loads(captured.out)["passed"] is False and "no pipeline compared" in captured.err
    assert main(["parity", str(export_copy), "--json"]) == 0  # the artifacts themselves pass
