"""Every component x format x precision of a tiny preset exports, and passes parity in its runtime."""

import json

import numpy as np
import pytest

from md_export.export import export_preset
from md_export.export.coreml import describe
from md_export.parity import check_directory
from md_export.models import get_preset

PRESET = "mobilediffusion-tiny"
COMPONENTS = ("text_encoder", "unet", "vae_decoder", "vae_encoder")
FORMATS = ("onnx", "coreml", "tflite")
PRECISIONS = ("fp32", "fp16")


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    out = tmp_path_factory.mktemp("export")
    entries = export_preset(get_preset(PRESET), COMPONENTS, FORMATS, PRECISIONS, out)
    return out, entries


@pytest.fixture(scope="module")
def report(exported):
    return check_directory(exported[0])


def test_every_component_format_precision_is_in_the_manifest(exported):
    out, entries = exported
    manifest = json.loads((out / "manifest.json").read_text())
    got = {(e["component"], e["format"], e["precision"]) for e in manifest["artifacts"]}
    assert got == {(c, f, p) for c in COMPONENTS for f in FORMATS for p in PRECISIONS}
    assert manifest["source"]["preset"] == PRESET
    assert manifest["tools"]["torch"].startswith("2.13.0")
    for entry in manifest["artifacts"]:
        assert (out / entry["file"]).exists()
        assert len(entry["sha256"]) == 64 and entry["size_bytes"] > 0
        assert entry["inputs"] and entry["outputs"] and entry["tolerance"]
        assert (out / entry["reference"]).is_file()
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no staging left behind


def test_onnx_and_litert_pass_parity_with_tight_fp32_errors(report):
    runnable = [a for a in report.artifacts if a.format in ("onnx", "tflite")]
    assert len(runnable) == len(COMPONENTS) * 2 * len(PRECISIONS)
    for artifact in runnable:
        assert artifact.status == "passed", (artifact.file, artifact.violations)
        if artifact.precision == "fp32":
            for metrics in artifact.outputs.values():
                # same math, another engine: anything above ~1e-3 on a tiny model is a bug
                assert metrics["max_abs"] < 1e-3, (artifact.file, metrics)
                assert metrics["psnr_db"] > 60


def test_coreml_packages_validate_and_say_parity_needs_macos(report):
    coreml = [a for a in report.artifacts if a.format == "coreml"]
    assert len(coreml) == len(COMPONENTS) * len(PRECISIONS)
    for artifact in coreml:
        assert artifact.status == "validated", artifact.violations
        assert "needs macOS" in artifact.note
    assert report.passed


def test_coreml_token_input_is_int32_and_fp16_is_default_precision(exported):
    out, _ = exported
    info = describe(out / "text_encoder.fp16.mlpackage")
    assert info["inputs"] == [{"name": "input_ids", "shape": [1, 77], "dtype": "int32"}]
    assert info["outputs"][0]["name"] == "text_emb"


def test_litert_token_ids_are_int32_and_int64_feeds_still_work(exported):
    from md_export.runtimes import open_artifact

    out, entries = exported
    entry = next(e for e in entries if e["format"] == "tflite" and e["component"] == "text_encoder")
    runner = open_artifact(out, entry)
    assert dict((s.name, s.dtype) for s in runner.inputs) == {"input_ids": "int32"}
    ids = np.arange(77, dtype=np.int64)[None]
    assert runner.run({"input_ids": ids})["text_emb"].shape == (1, 77, 64)


def test_fp16_artifacts_are_smaller(exported):
    _, entries = exported
    size = {(e["component"], e["format"], e["precision"]): e["size_bytes"] for e in entries}
    for component in COMPONENTS:
        for fmt in ("onnx", "tflite", "coreml"):
            assert size[(component, fmt, "fp16")] < 0.7 * size[(component, fmt, "fp32")], (component, fmt)


@pytest.mark.parametrize("runtime", ["onnx", "tflite"])
def test_pipeline_runs_end_to_end_on_exported_runners(exported, runtime, tmp_path, capsys):
    from md_export.cli import main

    out_png = tmp_path / f"{runtime}.png"
    code = main(["generate", "a red circle", "--runtime", runtime, "--artifacts", str(exported[0]), "--steps", "3",
                 "--seed", "3", "--out", str(out_png), "--compare-torch"])
    assert code == 0 and out_png.exists()
    line = next(l for l in capsys.readouterr().out.splitlines() if l.startswith("parity vs torch"))
    image_psnr = float(line.split("image PSNR ")[1].split(" dB")[0])
    assert image_psnr > 40.0, line  # fp32 runtimes: the same picture up to uint8 rounding


def test_litert_decoder_feeds_xnnpack_constant_weights_only(exported):
    """XNNPACK runs a FULLY_CONNECTED only with constant weights: the VAE attention's q k^T is
    exported as a BATCH_MATMUL (tflite.attention_scores_as_batch_matmul), not as a fully connected
    whose weights are k, which fell to TFLite's builtin kernel (8% of the 512 decoder)."""
    from ai_edge_litert.interpreter import Interpreter

    out, entries = exported
    for component in ("vae_decoder", "vae_encoder"):
        entry = next(e for e in entries if e["format"] == "tflite" and e["component"] == component
                     and e["precision"] == "fp32")
        ops = Interpreter(model_path=str(out / entry["file"]))._get_ops_details()
        computed = {t for op in ops for t in op["outputs"]}
        fully_connected = [op for op in ops if op["op_name"] == "FULLY_CONNECTED"]
        assert fully_connected and all(op["inputs"][1] not in computed for op in fully_connected)
        assert sum(op["op_name"] == "BATCH_MATMUL" for op in ops) == 2  # q k^T and the weights x v


def test_attention_scores_switch_only_while_converting():
    import torch

    from md_export.export.tflite import attention_scores_as_batch_matmul
    from md_export.models.vae_kl import VAEAttention

    torch.manual_seed(0)
    module = torch.nn.Sequential(VAEAttention(8, 2), VAEAttention(8, 2))
    x = torch.randn(1, 8, 4, 4)
    with torch.inference_mode():
        before = module(x)
        with attention_scores_as_batch_matmul([module, module]) as switched:  # shared: once each
            assert switched == 2 and all("scores" in m.__dict__ for m in module)
            during = module(x)
    torch.testing.assert_close(during, before, rtol=0, atol=1e-6)  # the same product, another kernel
    assert all("scores" not in m.__dict__ for m in module)  # the class's method again
