"""Each pruning method reaches its target, saves, reloads and exports to ONNX with parity."""

import pytest
import torch

from md_export.errors import MdExportError
from md_export.export import export_preset
from md_export.parity import check_directory
from md_export.prune.blocks import candidates
from md_export.prune.magnitude import prunable_weights
from md_export.prune.workflow import prune_preset
from md_export.torch_networks import load_module
from models import component_example_inputs, get_preset

TINY = "mobilediffusion-tiny"


def reload_and_export(out, tmp_path):
    """The directory is a preset: same outputs after reload, and an ONNX export that passes parity."""
    preset = get_preset(str(out))
    unet = load_module(preset, "unet", None, 0).module
    export_preset(preset, ["unet"], ["onnx"], ["fp32"], tmp_path / "onnx")
    report = check_directory(tmp_path / "onnx")
    assert report.passed, [a.violations for a in report.artifacts]
    return preset, unet


def unet_params(module):
    return sum(p.numel() for p in module.parameters())


def test_magnitude_reaches_the_target_sparsity(tmp_path):
    report = prune_preset(get_preset(TINY), "magnitude", 0.6, tmp_path / "m")
    assert report["result"]["sparsity"] == pytest.approx(0.6, abs=1e-4)
    preset, unet = reload_and_export(tmp_path / "m", tmp_path)
    weights = prunable_weights(unet)
    zeros = sum(int((w == 0).sum()) for w in weights) / sum(w.numel() for w in weights)
    assert zeros == pytest.approx(0.6, abs=1e-4)
    assert preset.unet == get_preset(TINY).unet  # unstructured: the structure is unchanged


def test_channel_pruning_reaches_the_target_and_rounds_to_8(tmp_path):
    report = prune_preset(get_preset(TINY), "channels", 0.4, tmp_path / "c")
    assert report["result"]["fraction"] == pytest.approx(0.4, abs=0.05)
    preset, unet = reload_and_export(tmp_path / "c", tmp_path)
    config = preset.unet
    assert all(w % 8 == 0 for w in config.resnet_inner_channels + config.ffn_inner_dims)
    assert unet_params(unet) == report["unet_params_after"] < 0.85 * report["unet_params_before"]
    # attention heads untouched: every query projection keeps its full width
    teacher = load_module(get_preset(TINY), "unet", None, 0).module
    q_widths = lambda m: [x.out_features for n, x in m.named_modules() if n.endswith("to_q")]  # noqa: E731
    assert q_widths(unet) == q_widths(teacher)


def test_block_removal_drops_the_least_important_blocks(tmp_path):
    teacher = load_module(get_preset(TINY), "unet", None, 0).module
    report = prune_preset(get_preset(TINY), "blocks", 3, tmp_path / "b")
    removed = report["result"]["removed"]
    assert len(removed) == 3
    ranking = report["result"]["ranking"]
    assert [r["importance"] for r in ranking] == sorted(r["importance"] for r in ranking)
    assert {r["name"] for r in removed} == {r["name"] for r in ranking[:3]}
    preset, unet = reload_and_export(tmp_path / "b", tmp_path)
    assert len(candidates(unet)) == len(candidates(teacher)) - 3
    assert unet_params(unet) < unet_params(teacher)
    # skipping the least important blocks barely changes the output on fresh inputs
    inputs = component_example_inputs(preset, "unet")
    with torch.no_grad():
        assert torch.nn.functional.cosine_similarity(unet(*inputs).flatten(), teacher(*inputs).flatten(), dim=0) > 0.9


def test_bad_amounts_fail_without_output(tmp_path):
    for method, amount in (("magnitude", 1.5), ("channels", 0.0), ("blocks", 0.5), ("blocks", 999)):
        with pytest.raises(MdExportError):
            prune_preset(get_preset(TINY), method, amount, tmp_path / "x")
        assert not (tmp_path / "x").exists()
