"""MobileUNet: shapes, determinism, and that each paper switch changes what it claims."""

import pytest
import torch

from md_export.models import MobileUNet, build_component, component_example_inputs, get_preset
from md_export.models.presets import ABLATION_STEPS


def n_params(module) -> int:
    return sum(p.numel() for p in module.parameters())


@pytest.mark.parametrize("name", [s + "-tiny" for s in ABLATION_STEPS])
def test_every_ablation_tiny_unet_runs_with_static_shapes(name):
    preset = get_preset(name)
    unet = build_component(preset, "unet")
    latent, timestep, text_emb = component_example_inputs(preset, "unet", batch=2)
    with torch.no_grad():
        out = unet(latent, timestep, text_emb)
    assert out.shape == latent.shape
    assert torch.isfinite(out).all()


def test_unet_is_deterministic_and_conditioned():
    preset = get_preset("mobilediffusion-tiny")
    a, b = build_component(preset, "unet", seed=3), build_component(preset, "unet", seed=3)
    latent, timestep, text_emb = component_example_inputs(preset, "unet")
    with torch.no_grad():
        out_a, out_b = a(latent, timestep, text_emb), b(latent, timestep, text_emb)
        other_text = a(latent, timestep, text_emb + 1.0)
        other_time = a(latent, timestep * 0 + 10.0, text_emb)
    assert torch.equal(out_a, out_b)
    assert (out_a - other_text).abs().max() > 1e-4  # text reaches the output (cross-attention)
    assert (out_a - other_time).abs().max() > 1e-4  # timestep reaches the output


def test_full_presets_hit_paper_parameter_counts():
    with torch.device("meta"):
        sd15 = MobileUNet(get_preset("sd15").unet)
        md = MobileUNet(get_preset("mobilediffusion").unet)
    assert n_params(sd15) == 859_520_964  # diffusers UNet2DConditionModel, SD-1.5 config
    assert abs(n_params(md) - 386e6) / 386e6 < 0.03  # paper: ~386M


def test_residual_block_counts_follow_the_paper():
    assert get_preset("sd15").unet.residual_blocks == 22
    assert get_preset("mobilediffusion").unet.residual_blocks == 12


def _tiny_unet(**changes):
    return MobileUNet(get_preset("ablation-1-bottleneck-tiny").unet.replace(**changes))


def test_shared_kv_removes_one_projection_per_attention():
    separate, shared = _tiny_unet(), _tiny_unet(shared_kv=True)
    names = dict(shared.named_modules())
    assert not any(name.endswith("to_k") for name in names)
    assert any(name.endswith("to_kv") for name in names)
    assert n_params(shared) < n_params(separate)


def test_cross_attention_only_blocks_have_no_self_attention():
    unet = _tiny_unet(self_attention=(False, False, False))
    outer = [n for n, _ in unet.named_modules() if ("down_blocks" in n or "up_blocks" in n) and n.endswith("attn1")]
    mid = [n for n, _ in unet.named_modules() if n.startswith("mid_attention") and n.endswith("attn1")]
    assert outer == []
    assert len(mid) == unet.config.mid_transformer_depth  # the bottleneck keeps self-attention


def test_ffn_expansion_and_separable_convs_shrink_the_model():
    base = _tiny_unet()
    assert n_params(_tiny_unet(ffn_expansion=6)) < n_params(base)
    separable = _tiny_unet(separable_conv=True)
    assert n_params(separable) < n_params(base)
    assert any(name.endswith("depthwise") for name, _ in separable.named_modules())
    # the top level keeps full convs
    assert not any(n.startswith("down_blocks.0.") and n.endswith("depthwise") for n, _ in separable.named_modules())


def test_relu_and_swish_switches_change_the_function_not_the_weights():
    base = get_preset("ablation-3-shared-kv-tiny").unet
    torch.manual_seed(0)
    softmax_gelu = MobileUNet(base)
    variant = MobileUNet(base.replace(attention="relu", ffn_activation="silu"))
    variant.load_state_dict(softmax_gelu.state_dict())
    inputs = component_example_inputs(get_preset("ablation-3-shared-kv-tiny"), "unet")
    with torch.no_grad():
        assert (softmax_gelu(*inputs) - variant(*inputs)).abs().max() > 1e-5


def test_bad_config_is_rejected_with_the_field_name():
    with pytest.raises(ValueError, match="attention"):
        get_preset("sd15-tiny").unet.replace(attention="linear")
    with pytest.raises(ValueError, match="transformer_depth"):
        get_preset("sd15-tiny").unet.replace(transformer_depth=(1, 1))


def test_split_einsum_attention_is_the_same_function_with_the_same_weights():
    preset = get_preset("mobilediffusion-tiny")
    batched = build_component(preset, "unet", seed=4)
    split = MobileUNet(preset.unet.replace(attention_implementation="split_einsum")).eval()
    split.load_state_dict(batched.state_dict())
    inputs = component_example_inputs(preset, "unet", batch=2)
    with torch.no_grad():
        assert (batched(*inputs) - split(*inputs)).abs().max().item() < 1e-5  # fp32 reassociation only


def test_a_unet_without_bottleneck_runs_and_refuses_a_lone_bottleneck_transformer():
    """BK-SDM-Small removes the mid block: mid_resnets=0 (its transformer has nowhere to sit)."""
    preset = get_preset("sd15-tiny")
    config = preset.unet.replace(mid_resnets=0, mid_transformer_depth=0)
    unet = MobileUNet(config).eval()
    assert len(unet.mid_resnets) == 0 and unet.mid_attention is None
    assert config.residual_blocks == get_preset("sd15-tiny").unet.residual_blocks - 2
    latent, timestep, text_emb = component_example_inputs(preset, "unet")
    with torch.no_grad():
        assert unet(latent, timestep, text_emb).shape == latent.shape
    with pytest.raises(ValueError, match="mid_transformer_depth must be 0"):
        preset.unet.replace(mid_resnets=0)
