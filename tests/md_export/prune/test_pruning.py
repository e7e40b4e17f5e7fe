"""Each pruning method reaches its target, saves, reloads and exports to ONNX with parity."""

import pytest
import torch

from md_export.errors import MdExportError
from md_export.export import export_preset
from md_export.parity import check_directory
from md_export.prune.blocks import candidates
from md_export.prune.heads import head_scores
from md_export.prune.magnitude import prunable_weights
from md_export.prune.structure import transformer_blocks
from md_export.prune.workflow import prune_preset
from md_export.torch_networks import load_module
from md_export.models import component_example_inputs, get_preset

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


def test_head_pruning_removes_whole_heads_and_matches_masking_them(tmp_path):
    teacher = load_module(get_preset(TINY), "unet", None, 0).module
    report = prune_preset(get_preset(TINY), "heads", 0.5, tmp_path / "h")
    assert report["result"]["fraction"] == pytest.approx(0.5)  # 2 heads -> 1 in every attention
    preset, unet = reload_and_export(tmp_path / "h", tmp_path)
    assert preset.unet.attention_heads == (1,) * len(transformer_blocks(teacher))
    assert unet_params(unet) == report["unet_params_after"] < report["unet_params_before"]
    for (_, old), (_, new) in zip(transformer_blocks(teacher), transformer_blocks(unet)):
        # whole heads: same head width, fewer heads, the token stream keeps its width
        assert new.attn2.head_dim == old.attn2.head_dim and new.attn2.heads == 1
        assert new.attn2.to_q.out_features == old.attn2.head_dim
        assert new.attn2.to_out[0].out_features == old.attn2.to_out[0].out_features
    # Removing a head is the same as zeroing its output columns in the teacher (exact up to fp32).
    masked = load_module(get_preset(TINY), "unet", None, 0).module
    with torch.no_grad():
        for _, block in transformer_blocks(masked):
            for attention in [block.attn2] + ([block.attn1] if block.has_self_attention else []):
                kept = set(torch.topk(head_scores(attention), 1).indices.tolist())
                for head in set(range(attention.heads)) - kept:
                    attention.to_out[0].weight[:, head * attention.head_dim:(head + 1) * attention.head_dim] = 0
        inputs = component_example_inputs(preset, "unet")
        torch.testing.assert_close(unet(*inputs), masked(*inputs), rtol=1e-4, atol=1e-5)
    # a head-pruned directory prunes further (blocks) and still reloads
    removed = prune_preset(preset, "blocks", 2, tmp_path / "hb")["result"]["removed"]
    transformers_left = len(transformer_blocks(teacher)) - sum(r["kind"] == "transformer" for r in removed)
    assert get_preset(str(tmp_path / "hb")).unet.attention_heads == (1,) * transformers_left


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
    for method, amount in (("magnitude", 1.5), ("channels", 0.0), ("heads", 1.0), ("blocks", 0.5), ("blocks", 999)):
        with pytest.raises(MdExportError):
            prune_preset(get_preset(TINY), method, amount, tmp_path / "x")
        assert not (tmp_path / "x").exists()
