"""Two resolutions from one command: separate files (ONNX, Core ML), signatures in one file (LiteRT)."""

import pytest

from md_export.export import export_preset
from md_export.parity import check_directory
from md_export.models import get_preset


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    out = tmp_path_factory.mktemp("multires")
    entries = export_preset(get_preset("mobilediffusion-tiny"), ["vae_decoder"], ["onnx", "coreml", "tflite"],
                            ["fp32"], out, resolutions=[64, 96])
    return out, entries


def test_each_format_holds_both_resolutions_and_says_how(exported):
    _, entries = exported
    by_format = {}
    for entry in entries:
        by_format.setdefault(entry["format"], []).append(entry)
    assert {e["resolution"] for e in by_format["onnx"]} == {64, 96}
    assert len({e["file"] for e in by_format["onnx"]}) == 2
    assert len({e["file"] for e in by_format["coreml"]}) == 2
    assert len({e["file"] for e in by_format["tflite"]}) == 1  # one file, two signatures
    assert {e["signature"] for e in by_format["tflite"]} == {"vae_decoder_64", "vae_decoder_96"}
    assert {e["multi_resolution"] for e in entries} == {"separate files", "separate packages", "signatures in one file"}
    shapes = {e["resolution"]: e["outputs"][0]["shape"] for e in by_format["tflite"]}
    assert shapes == {64: [1, 3, 64, 64], 96: [1, 3, 96, 96]}


def test_both_resolutions_pass_parity(exported):
    report = check_directory(exported[0])
    assert report.passed, [(a.file, a.signature, a.violations) for a in report.artifacts if not a.ok]
    assert sum(1 for a in report.artifacts if a.status == "passed") == 4  # onnx x2 + tflite signatures x2
