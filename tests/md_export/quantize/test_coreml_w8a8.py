"""coreml-w8a8: int8 weights + calibrated int8 activations, from the PyTorch module of a preset export.

Runs on the tiny preset's text encoder (the cheapest network whose file is mostly weights; the UNet
and decoder take the same code path, measured by hand: see the recipe's docstring). Off macOS the
package is validated and the gate applies to the fake-quantized torch model; running the package
needs macOS.
"""

import json
import platform

import pytest
import torch
from torch import nn

from md_export.calibration.builders import CalibrationSettings, build_calibration
from md_export import export_model
from md_export.cli import main
from md_export.export import export_preset
from md_export.export.manifest import read_manifest
from md_export.parity import check_directory
from md_export.quantize import coreml_w8a8
from md_export.quantize.recipes import RECIPES
from md_export.models import get_preset

RECIPE = "coreml-w8a8"
WEIGHTS = "Data/com.apple.CoreML/weights/weight.bin"


@pytest.fixture(scope="module")
def quantized(tmp_path_factory):
    root = tmp_path_factory.mktemp("w8a8")
    preset = get_preset("mobilediffusion-tiny")
    export_preset(preset, ["text_encoder"], ["coreml"], ["fp32"], root / "fp")
    build_calibration(preset, root / "calib", CalibrationSettings(num_prompts=3, steps=1, photos=1))
    code = main(["quantize", "--artifacts", str(root / "fp"), "--recipe", RECIPE, "--out", str(root / "q"),
                 "--calibration", str(root / "calib")])
    assert code == 0
    return root


def _entry(directory):
    (entry,) = read_manifest(directory)["artifacts"]
    return entry


def test_package_validates_and_passes_the_fake_quant_gate(quantized):
    entry = _entry(quantized / "q")
    assert entry["precision"] == "int8-w8a8" and entry["recipe"] == RECIPE
    (artifact,) = check_directory(quantized / "q").artifacts
    assert artifact.status == "validated", artifact.violations
    gate = RECIPES[RECIPE].tolerances.lookup("text_encoder", "int8-w8a8")
    assert set(artifact.outputs) == {"text_emb@seeded", "text_emb@real"}  # seeded and real calibration inputs
    for metrics in artifact.outputs.values():
        assert metrics["psnr_db"] >= gate.min_psnr_db and metrics["cosine"] >= gate.min_cosine
        assert metrics["psnr_db"] < 80  # int8 activations: an error is there to measure (not the fp32 model)
    assert "macOS" in artifact.note and "fake-quantized torch" in artifact.note


def test_program_quantizes_activations_and_weights(quantized):
    report = coreml_w8a8.activation_quantization(quantized / "q" / _entry(quantized / "q")["file"])
    # text encoder: q/k/v/out projections, fc1, fc2 and both attention matmuls per layer
    assert report["compute_ops"] >= 8 and report["compute_ops_on_int8_activations"] == report["compute_ops"]
    assert report["quantize"] >= 6 and report["dequantize"] >= report["quantize"]
    assert report["int8_weights"] >= 6  # int8 constexpr weights: linear layers and the token table
    assert _entry(quantized / "q")["w8a8_program"] == report
    fp32 = coreml_w8a8.activation_quantization(quantized / "fp" / _entry(quantized / "fp")["file"])
    assert fp32["quantize"] == fp32["int8_weights"] == fp32["compute_ops_on_int8_activations"] == 0


def test_w8a8_is_at_least_3_5x_smaller_than_fp32(quantized):
    fp32, w8a8 = _entry(quantized / "fp"), _entry(quantized / "q")
    assert fp32["size_bytes"] / w8a8["size_bytes"] >= 3.5, (fp32["size_bytes"], w8a8["size_bytes"])
    weights = [(quantized / d / e["file"] / WEIGHTS).stat().st_size for d, e in (("fp", fp32), ("q", w8a8))]
    assert weights[0] / weights[1] >= 3.5, weights


def test_a_tighter_gate_fails_parity(quantized, tmp_path):
    """The recorded fake-quant metrics are checked, not just carried: a gate they miss fails."""
    import shutil

    shutil.copytree(quantized / "q", tmp_path / "q")
    manifest = json.loads((tmp_path / "q" / "manifest.json").read_text())
    manifest["artifacts"][0]["tolerance"]["min_psnr_db"] = 90.0
    (tmp_path / "q" / "manifest.json").write_text(json.dumps(manifest))
    (artifact,) = check_directory(tmp_path / "q").artifacts
    assert artifact.status == "failed" and any("PSNR" in v for v in artifact.violations)


@pytest.mark.skipif(platform.system() != "Darwin",
                    reason="MLModel.predict needs macOS; off macOS the gate applies to the fake-quantized torch "
                           "model recorded in the manifest (torch_parity)")
def test_package_runs_within_its_gate_on_macos(quantized):
    (artifact,) = check_directory(quantized / "q").artifacts
    assert artifact.status == "passed", artifact.violations


class ConvLinear(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.fc = nn.Linear(8, 4)

    def forward(self, x):
        return self.fc(torch.relu(self.conv(x)).mean(dim=(2, 3)))


def test_lowering_keeps_the_reference_model_numerics():
    """`lower` swaps torch quantized tensors for quantized_decomposed ops value for value, and the
    result has int8 weight buffers and traces with torch.export."""
    import coremltools.optimize.torch.quantization as cto_torch

    torch.manual_seed(0)
    module = ConvLinear().eval()
    batches = [torch.randn(1, 3, 8, 8) for _ in range(4)]
    quantizer = cto_torch.LinearQuantizer(module, cto_torch.LinearQuantizerConfig(
        global_config=cto_torch.ModuleLinearQuantizerConfig(quantization_scheme="symmetric",
                                                            milestones=[0, 1 << 30, 1 << 30, 0])))
    prepared = quantizer.prepare(example_inputs=(batches[0],))
    quantizer.step()
    with torch.no_grad():
        for batch in batches:
            prepared(batch)
    reference = quantizer.finalize(inplace=False)
    with torch.no_grad():
        expected = reference(batches[1])
        lowered = coreml_w8a8.lower(reference)
        actual = lowered(batches[1])
        fp32 = module(batches[1])
    torch.testing.assert_close(actual, expected, rtol=1e-5, atol=1e-6)
    assert not torch.allclose(actual, fp32, atol=1e-6)  # it is quantized
    assert {b.dtype for n, b in lowered.named_buffers() if n.endswith("qweight")} == {torch.int8}
    program = torch.export.export(lowered, (batches[1],))
    targets = {str(n.target) for n in program.graph.nodes if n.op == "call_function"}
    assert {"quantized_decomposed.quantize_per_tensor.default",
            "quantized_decomposed.dequantize_per_channel.default"} <= targets


def test_export_of_a_plain_module_is_a_clear_error(tmp_path, capsys):
    torch.manual_seed(0)
    module = ConvLinear()
    export_model(module, {"x": torch.randn(1, 3, 8, 8)}, formats=["coreml"], out_dir=tmp_path / "fp")
    from md_export.calibration.user_inputs import calibrate_module

    # real calibration rows for the module: the refusal is about the W8A8 route, not the data
    calibrate_module(module, {"x": torch.randn(4, 3, 8, 8)}, tmp_path / "calib")
    code = main(["quantize", "--artifacts", str(tmp_path / "fp"), "--recipe", RECIPE, "--out", str(tmp_path / "q"),
                 "--calibration", str(tmp_path / "calib")])
    err = capsys.readouterr().err
    assert code != 0 and "export with md-export export --preset" in err, err


def test_help_lists_w8a8_under_coreml():
    from md_export.quantize.recipes import recipe_help

    text = recipe_help()
    line = text.split(RECIPE)[1].splitlines()[0]
    assert text.index(RECIPE) > text.index("coreml:") and "[needs --calibration]" in line
