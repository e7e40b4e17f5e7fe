"""Every recipe makes an artifact that runs (ONNX, LiteRT) or validates (Core ML), with its gate."""


import numpy as np
import pytest
import torch

from md_export.calibration.builders import CalibrationSettings, build_calibration
from md_export import export_model
from md_export.cli import main
from md_export.export import export_preset
from md_export.export.manifest import read_manifest
from md_export.parity import check_directory
from md_export.quantize.recipes import RECIPES
from md_export.models import get_preset

PRESET = "mobilediffusion-tiny"


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    root = tmp_path_factory.mktemp("quant")
    preset = get_preset(PRESET)
    # text encoder (weights dominate: size ratios are meaningful) and decoder; the UNet path is
    # the same code and is exercised by the fallback test and the main-job test
    export_preset(preset, ["text_encoder", "vae_decoder"], ["onnx", "tflite", "coreml"], ["fp32", "fp16"],
                  root / "fp")
    build_calibration(preset, root / "calib", CalibrationSettings(num_prompts=3, steps=2))
    return root


# coreml-w8a8 recalibrates the PyTorch module (minutes for this workspace's decoder on a busy
# 2-core host): test_coreml_w8a8.py runs the same CLI and parity checks on the text encoder
@pytest.mark.parametrize("recipe", sorted(set(RECIPES) - {"coreml-w8a8"}))
def test_recipe_produces_a_working_artifact(workspace, recipe, capsys):
    out = workspace / recipe
    args = ["quantize", "--artifacts", str(workspace / "fp"), "--recipe", recipe, "--out", str(out),
            "--calibration", str(workspace / "calib")]
    # full-integer W8A8 (every op int8) on a random-weight decoder misses its gate (cosine 0.77 on
    # the seeded latent): quantize says so with exit 1, artifacts written; the rest pass theirs,
    # tflite-static-int8 (compute ops int8, norms float) included
    misses = recipe == "tflite-static-int8-full"
    assert main(args) == (1 if misses else 0), capsys.readouterr().err
    manifest = read_manifest(out)
    for entry in manifest["artifacts"]:
        gate = entry["gate"]
        assert gate["passed"] == (not (misses and entry["component"] == "vae_decoder")), gate
        assert gate["checked"] == (RECIPES[recipe].format != "coreml")  # Core ML is validated off macOS
    assert {e["recipe"] for e in manifest["artifacts"]} == {recipe}
    assert manifest["source"]["quantization"]["recipe"] == recipe
    report = check_directory(out)
    for artifact in report.artifacts:
        expected = "validated" if RECIPES[recipe].format == "coreml" else "passed"
        if misses and artifact.component == "vae_decoder":
            # parity agrees with the gate; test_fallback shows --target-psnr recovering such a case
            assert artifact.status == "failed" and artifact.violations, artifact.outputs
            continue
        assert artifact.status == expected, (artifact.file, artifact.violations)
        if expected == "passed":
            assert any(k.endswith("@real") for k in artifact.outputs)  # real calibration inputs too


class WeightHeavy(torch.nn.Module):
    """Weights dominate the file (as in the full presets): size ratios measure the recipe, not the
    per-channel scale tables that dominate a tiny preset's embedding."""

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(128, 128, 3, padding=1)
        self.fc1 = torch.nn.Linear(512, 1024)
        self.fc2 = torch.nn.Linear(1024, 512)

    def forward(self, image, tokens):
        return self.conv(image).mean(dim=(2, 3)).repeat(1, 4) + self.fc2(torch.relu(self.fc1(tokens)))


@pytest.fixture(scope="module")
def weight_heavy(tmp_path_factory):
    out = tmp_path_factory.mktemp("heavy")
    torch.manual_seed(0)
    export_model(WeightHeavy(), {"image": torch.randn(1, 128, 8, 8), "tokens": torch.randn(1, 512)},
                 formats=["onnx", "tflite", "coreml"], out_dir=out, precisions=["fp32"])
    return out


@pytest.mark.parametrize("recipe", ["onnx-dynamic-int8", "tflite-dynamic-int8", "tflite-weight-only-int8",
                                    "coreml-linear-int8"])
def test_int8_is_at_least_3_5x_smaller_than_fp32(weight_heavy, recipe, tmp_path):
    assert main(["quantize", "--artifacts", str(weight_heavy), "--recipe", recipe, "--out", str(tmp_path)]) == 0
    fp32 = {e["format"]: e["size_bytes"] for e in read_manifest(weight_heavy)["artifacts"]}[RECIPES[recipe].format]
    int8 = read_manifest(tmp_path)["artifacts"][0]["size_bytes"]
    assert fp32 / int8 >= 3.5, (recipe, fp32, int8)


def test_static_int8_of_a_real_network_is_3_5x_smaller(workspace):
    fp32 = {e["file"]: e["size_bytes"] for e in read_manifest(workspace / "fp")["artifacts"]}["text_encoder.fp32.onnx"]
    out = workspace / "onnx-static-int8"
    if not (out / "manifest.json").exists():
        main(["quantize", "--artifacts", str(workspace / "fp"), "--recipe", "onnx-static-int8", "--out", str(out),
              "--calibration", str(workspace / "calib")])
    int8 = next(e["size_bytes"] for e in read_manifest(out)["artifacts"] if e["component"] == "text_encoder")
    assert fp32 / int8 >= 3.5


def test_calibrated_recipe_without_calibration_is_a_clear_error(workspace, capsys):
    code = main(["quantize", "--artifacts", str(workspace / "fp"), "--recipe", "onnx-static-int8",
                 "--out", str(workspace / "nocal")])
    assert code == 2 and "pass --calibration DIR" in capsys.readouterr().err


def test_unknown_recipe_lists_the_known_ones(workspace, capsys):
    code = main(["quantize", "--artifacts", str(workspace / "fp"), "--recipe", "onnx-int3", "--out", str(workspace / "x")])
    err = capsys.readouterr().err
    assert code == 2 and "unknown recipe 'onnx-int3'" in err and "tflite-static-int8" in err


def test_help_lists_recipes_per_format(capsys):
    with pytest.raises(SystemExit):
        main(["quantize", "--help"])
    out = capsys.readouterr().out
    for fmt in ("onnx:", "tflite:", "coreml:"):
        assert fmt in out
    assert all(name in out for name in RECIPES)


def test_no_gate_keeps_going_and_says_so(workspace, capsys, tmp_path):
    # the full-integer recipe misses on this workspace's decoder (test above): --no-gate still exits 0
    args = ["quantize", "--artifacts", str(workspace / "fp"), "--recipe", "tflite-static-int8-full", "--out",
            str(tmp_path / "q"), "--calibration", str(workspace / "calib"), "--speed-runs", "0", "--no-gate"]
    assert main(args) == 0, capsys.readouterr().err
    gates = [e["gate"] for e in read_manifest(tmp_path / "q")["artifacts"]]
    assert gates and all(g == {"checked": False, "reason": "--no-gate"} for g in gates)


def test_static_int8_real_reference_comes_from_its_calibration_pass(workspace, tmp_path, monkeypatch):
    """The calibration pass runs the fp32 model on every calibration feed: the real reference keeps
    those outputs instead of running the fp32 artifact again, and they are that artifact's own
    outputs to float rounding (its graph optimizations reorder float sums)."""
    import numpy as np

    from md_export.quantize import driver
    from md_export.runtimes.open import open_artifact

    opened = []
    monkeypatch.setattr(driver, "open_artifact", lambda *args, **kw: opened.append(args) or open_artifact(*args, **kw))
    out = tmp_path / "static"
    entries = driver.quantize_directory(workspace / "fp", "onnx-static-int8", out, workspace / "calib", gate=False,
                                        speed_runs=0)
    assert opened == []  # no fp32 artifact ran for the references
    fp32 = {e["file"]: e for e in read_manifest(workspace / "fp")["artifacts"]}
    for entry in entries:
        assert entry["real_reference_from"].startswith("the fp32 graph in its calibration pass"), entry
        stored = np.load(out / entry["real_reference"])
        runner = open_artifact(workspace / "fp", fp32[entry["quantized_from"]])
        names = [i["name"] for i in entry["inputs"]]
        for row in range(stored[f"input:{names[0]}"].shape[0]):
            got = runner.run({n: stored[f"input:{n}"][row:row + 1] for n in names})
            for output in entry["outputs"]:
                reference = stored[f"output:{output['name']}"][row:row + 1]
                # fp32 either way: 1e-4 of the output's range bounds float reordering, not a model change
                assert np.abs(got[output["name"]] - reference).max() <= 1e-4 * np.abs(reference).max()
    report = check_directory(out)
    assert all(a.status == "passed" and any(k.endswith("@real") for k in a.outputs) for a in report.artifacts)


def test_static_int8_records_its_conv_route_and_either_route_gives_the_same_output(workspace, tmp_path,
                                                                                     monkeypatch):
    from md_export.parity import load_reference
    from md_export.quantize import conv_route, driver
    from md_export.runtimes.open import open_artifact

    outputs = {}
    for route in conv_route.ROUTES:
        monkeypatch.setenv(conv_route.CONV_ROUTE_ENV, route)
        out = tmp_path / route
        entries = driver.quantize_directory(workspace / "fp", "onnx-static-int8", out, workspace / "calib",
                                            gate=False, speed_runs=0)
        decoder = next(e for e in entries if e["component"] == "vae_decoder")
        text_encoder = next(e for e in entries if e["component"] == "text_encoder")
        assert decoder["int8_convs"]["route"] == route
        if route == "gemm":
            assert decoder["int8_convs"]["routed"] >= 1, decoder["int8_convs"]
            assert text_encoder["int8_convs"]["routed"] == 0  # no convs there, and its summary says nothing of them
            assert "symmetric kernel" not in driver.quantize_summary(text_encoder)
            assert "through the int8 GEMM" in driver.quantize_summary(decoder)
        else:
            assert "routed" not in decoder["int8_convs"]
        runner = open_artifact(out, decoder)
        outputs[route] = runner.run(load_reference(out, decoder)[0])
    # exact: the same int8 products, another kernel (the 512 UNet and decoder: max abs diff 0.0)
    assert all(np.array_equal(outputs["gemm"][k], outputs["symmetric"][k]) for k in outputs["gemm"])


def test_static_int8_records_its_activation_ranges_and_takes_another_on_request(workspace, tmp_path):
    """auto: these networks (no UNet) keep min/max ranges; --activation-ranges percentile clips the
    tails of every network, and the manifest says which one each artifact got."""
    from md_export.errors import BadArgumentError
    from md_export.quantize import driver

    scales = {}
    for ranges in ("auto", "percentile"):
        entries = driver.quantize_directory(workspace / "fp", "onnx-static-int8", tmp_path / ranges, workspace / "calib",
                                            gate=False, speed_runs=0, activation_ranges=ranges)
        expected = {"method": "minmax"} if ranges == "auto" else {"method": "percentile", "percentile": 99.999}
        assert all(e["activation_ranges"] == expected for e in entries), [e["activation_ranges"] for e in entries]
        decoder = next(e for e in entries if e["component"] == "vae_decoder")
        scales[ranges] = _activation_scales(tmp_path / ranges / decoder["file"])
    # This calibration holds under 200,000 values per tensor: 5e-6 of them rounds up to one value a
    # side, the extremes themselves, so the percentile pass gives min/max's scales exactly
    # (test_tail_ranges.py shows the clipping on enough values).
    assert scales["auto"] == scales["percentile"] and len(scales["auto"]) > 5
    with pytest.raises(BadArgumentError, match="--activation-ranges must be auto or one of minmax, percentile"):
        driver.quantize_directory(workspace / "fp", "onnx-static-int8", tmp_path / "bad", workspace / "calib",
                                  activation_ranges="entropy")
    assert not (tmp_path / "bad").exists()


def _activation_scales(path) -> dict[str, float]:
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(path))
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    return {n.input[0]: float(inits[n.input[1]]) for n in model.graph.node
            if n.op_type == "QuantizeLinear" and n.input[0] not in inits and inits[n.input[1]].size == 1}
