"""diffusers pipeline folders (UNet2DConditionModel, AutoencoderKL, CLIPTextModel) through our loaders,
compared with the diffusers / transformers modules on the same inputs."""

import dataclasses
import json

import pytest
import torch

from md_export.models import (CheckpointError, ConfigMismatchError, UnsupportedConfigError, get_preset,
                              load_pretrained, open_checkpoint, preset_from_diffusers)
from md_export.models.convert_diffusers import unet_config_from_diffusers, vae_config_from_diffusers

pytest.importorskip("diffusers")

TINY = "sd15-tiny"
# fp32, same math, different op order (our explicit-matmul attention vs diffusers' SDPA): 1e-4
TOLERANCE = 1e-4


def unet_inputs(side=8, text_width=64, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return (torch.randn(2, 4, side, side, generator=generator), torch.tensor([10.0, 700.0]),
            torch.randn(2, 77, text_width, generator=generator))


def unet_difference(reference, ours, side=8):
    latent, timestep, text = unet_inputs(side)
    with torch.no_grad():
        expected = reference(latent, timestep, encoder_hidden_states=text).sample
        actual = ours(latent, timestep, text)
    assert expected.abs().max() > 0.1  # a real signal, not two zero maps
    return (actual - expected).abs().max().item()


def test_sd15_layout_unet_matches_diffusers(tiny_sd15_diffusers):
    folder, reference = tiny_sd15_diffusers
    ours = load_pretrained(get_preset(TINY), "unet", folder)
    assert unet_difference(reference["unet"], ours) <= TOLERANCE  # fp32, same math: 1e-4 (measured 1.8e-6)


def test_vae_decoder_and_encoder_match_autoencoder_kl(tiny_sd15_diffusers):
    folder, reference = tiny_sd15_diffusers
    preset = get_preset(TINY)
    vae = reference["vae"]
    decoder = load_pretrained(preset, "vae_decoder", folder)
    encoder = load_pretrained(preset, "vae_encoder", folder)
    generator = torch.Generator().manual_seed(3)
    latent = torch.randn(1, 4, 8, 8, generator=generator)
    image = torch.rand(1, 3, 64, 64, generator=generator) * 2 - 1
    scale = preset.vae.scaling_factor
    with torch.no_grad():
        # our decoder takes the UNet's (scaled) latent; diffusers' decode takes the unscaled one
        decoded = (decoder(latent) - vae.decode(latent / scale).sample).abs().max().item()
        encoded = (encoder(image) - vae.encode(image).latent_dist.mean * scale).abs().max().item()
    assert decoded <= TOLERANCE  # fp32, same math: 1e-4 (measured 3.4e-6)
    assert encoded <= TOLERANCE  # fp32, same math: 1e-4 (measured 6.5e-8)
    # post_quant_conv / quant_conv are loaded, not dropped
    assert torch.equal(decoder.decoder.post_quant_conv.weight, vae.post_quant_conv.weight)
    assert torch.equal(encoder.encoder.quant_conv.weight, vae.quant_conv.weight)


def test_text_encoder_matches_clip_text_model(tiny_sd15_diffusers):
    folder, reference = tiny_sd15_diffusers
    ours = load_pretrained(get_preset(TINY), "text_encoder", folder)
    ids = torch.randint(0, 49408, (2, 77), generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        difference = (ours(ids) - reference["text_encoder"](input_ids=ids).last_hidden_state).abs().max().item()
    assert difference <= TOLERANCE  # fp32, same math: 1e-4 (measured 1.5e-6)


def test_preset_built_from_the_folder_is_sd15_tiny(tiny_sd15_diffusers):
    folder, _ = tiny_sd15_diffusers
    built = get_preset(str(folder))  # a diffusers folder is a preset, as a preset.json folder is
    tiny = get_preset(TINY)
    assert built.name == str(folder.resolve()) and built.resolution == 64
    assert built.unet == tiny.unet and built.text_encoder == tiny.text_encoder
    assert built.vae.scaling_factor == tiny.vae.scaling_factor
    assert built.vae.decoder.block_out_channels == tiny.vae.decoder.block_out_channels
    assert open_checkpoint(folder).layout == "diffusers"


# A BK-SDM-Small/Tiny-style UNet: one resnet+transformer per down level (two per up level), no
# bottleneck, and (Tiny) the innermost level removed: three levels, all with transformers.
BK_SDM = dict(block_out_channels=(32, 64, 128), layers_per_block=1, mid_block_type=None,
              down_block_types=("CrossAttnDownBlock2D",) * 3, up_block_types=("CrossAttnUpBlock2D",) * 3)
# SD-2.x-style switches: linear proj_in/proj_out, per-level heads, two transformer blocks per level.
SD2_STYLE = dict(use_linear_projection=True, attention_head_dim=(2, 2, 4, 4), transformer_layers_per_block=2,
                 upcast_attention=True)


@pytest.mark.parametrize("overrides", [BK_SDM, SD2_STYLE], ids=["bk-sdm", "sd2-style"])
def test_other_unet_layouts_build_a_preset_and_match(overrides, make_diffusers_pipeline, tmp_path):
    reference = make_diffusers_pipeline(tmp_path, unet=overrides, seed=7)
    preset = preset_from_diffusers(tmp_path)
    if overrides is BK_SDM:
        assert preset.unet.down_layers_per_level == (1, 1, 1) and preset.unet.mid_resnets == 0
        assert preset.unet.residual_blocks == 3 + 0 + 6
    ours = load_pretrained(preset, "unet", tmp_path)
    assert unet_difference(reference["unet"], ours) <= TOLERANCE  # fp32, same math: 1e-4 (measured 2.1e-6)


def test_pickled_bin_weights_load(make_diffusers_pipeline, tmp_path):
    reference = make_diffusers_pipeline(tmp_path, seed=3, safe_serialization=False)
    assert (tmp_path / "unet" / "diffusion_pytorch_model.bin").is_file()
    ours = load_pretrained(get_preset(TINY), "unet", tmp_path)
    assert unet_difference(reference["unet"], ours) <= TOLERANCE  # fp32, same math: 1e-4


def test_a_config_that_differs_from_the_preset_names_the_fields(tiny_sd15_diffusers):
    folder, _ = tiny_sd15_diffusers
    other = get_preset(TINY)
    other = dataclasses.replace(other, unet=other.unet.replace(norm_groups=16, num_attention_heads=(4,) * 4))
    with pytest.raises(ConfigMismatchError) as info:
        load_pretrained(other, "unet", folder)
    assert info.value.fields == ["num_attention_heads", "norm_groups"]
    assert "norm_groups: preset 16, checkpoint 8" in str(info.value)
    with pytest.raises(ConfigMismatchError, match="block_out_channels"):
        load_pretrained(get_preset("mobilediffusion-tiny"), "vae_decoder", folder)  # the light decoder is thinner


def test_a_graph_choice_is_not_a_config_difference(tiny_sd15_diffusers):
    folder, _ = tiny_sd15_diffusers
    preset = get_preset(TINY)
    preset = dataclasses.replace(preset, unet=preset.unet.replace(attention_implementation="split_einsum"))
    assert load_pretrained(preset, "unet", folder).config.attention_implementation == "split_einsum"


def test_scheduler_prediction_type_is_checked(make_diffusers_pipeline, tmp_path):
    make_diffusers_pipeline(tmp_path, prediction_type="v_prediction")
    assert preset_from_diffusers(tmp_path).unet.prediction_type == "v_prediction"
    with pytest.raises(ConfigMismatchError, match="prediction_type: preset 'epsilon', checkpoint 'v_prediction'"):
        load_pretrained(get_preset(TINY), "unet", tmp_path)


def test_an_unmapped_key_is_named(tiny_sd15_diffusers, tmp_path):
    from safetensors.torch import load_file, save_file

    folder, _ = tiny_sd15_diffusers
    for sub in ("unet", "vae", "text_encoder", "scheduler"):
        (tmp_path / sub).mkdir()
        for file in (folder / sub).iterdir():
            (tmp_path / sub / file.name).write_bytes(file.read_bytes())
    weights = tmp_path / "unet" / "diffusion_pytorch_model.safetensors"
    state = load_file(str(weights))
    state["class_embedding.linear_1.weight"] = torch.zeros(128, 32)
    save_file(state, str(weights))
    with pytest.raises(CheckpointError) as info:
        load_pretrained(get_preset(TINY), "unet", tmp_path)
    assert info.value.unmapped == ["class_embedding.linear_1.weight"]
    assert "unmapped keys (no conversion rule): class_embedding.linear_1.weight" in str(info.value)


@pytest.mark.parametrize("field, value", [
    ("time_cond_proj_dim", 256),
    ("only_cross_attention", True),
    ("class_embed_type", "timestep"),
    ("mid_block_type", "UNetMidBlock2DSimpleCrossAttn"),
])
def test_unrepresentable_unet_configs_name_the_field(field, value):
    config = {"_class_name": "UNet2DConditionModel", "block_out_channels": [32, 64, 128, 128], field: value}
    with pytest.raises(UnsupportedConfigError, match=field):
        unet_config_from_diffusers(config)


def test_unrepresentable_vae_config_names_the_field():
    with pytest.raises(UnsupportedConfigError, match="shift_factor"):
        vae_config_from_diffusers({"_class_name": "AutoencoderKL", "shift_factor": 0.1159})
    with pytest.raises(UnsupportedConfigError, match="AutoencoderTiny"):
        vae_config_from_diffusers({"_class_name": "AutoencoderTiny"})


def test_vae_switches_follow_the_config():
    config = vae_config_from_diffusers({"block_out_channels": [16, 32], "down_block_types": ["DownEncoderBlock2D"] * 2,
                                        "up_block_types": ["UpDecoderBlock2D"] * 2, "norm_num_groups": 8,
                                        "use_quant_conv": False, "mid_block_add_attention": False,
                                        "scaling_factor": 0.13025})
    assert config.encoder.quant_conv is False and config.decoder.quant_conv is True
    assert config.decoder.mid_attention is False and config.scaling_factor == 0.13025


def test_legacy_vae_attention_names_load(tiny_sd15_diffusers, tmp_path):
    """diffusers < 0.14 saved the VAE mid attention as query / key / value / proj_attn."""
    from safetensors.torch import load_file, save_file

    folder, reference = tiny_sd15_diffusers
    (tmp_path / "vae").mkdir()
    (tmp_path / "vae" / "config.json").write_text((folder / "vae" / "config.json").read_text())
    names = {".to_q.": ".query.", ".to_k.": ".key.", ".to_v.": ".value.", ".to_out.0.": ".proj_attn."}
    state = {}
    for key, value in load_file(str(folder / "vae" / "diffusion_pytorch_model.safetensors")).items():
        for new, old in names.items():
            key = key.replace(new, old)
        state[key] = value
    save_file(state, str(tmp_path / "vae" / "diffusion_pytorch_model.safetensors"))
    decoder = load_pretrained(get_preset(TINY), "vae_decoder", tmp_path)
    assert torch.equal(decoder.decoder.mid_block.attentions[0].to_q.weight,
                       reference["vae"].decoder.mid_block.attentions[0].to_q.weight)


def test_components_folder_accepts_diffusers_named_files(tiny_sd15_diffusers, tmp_path):
    """unet.safetensors / vae_decoder.safetensors holding a diffusers state dict (e.g. saved from
    `pipe.unet.state_dict()`) load into the components layout too."""
    from safetensors.torch import save_file

    folder, reference = tiny_sd15_diffusers
    save_file({k: v.contiguous() for k, v in reference["unet"].state_dict().items()},
              str(tmp_path / "unet.safetensors"))
    save_file({k: v.contiguous() for k, v in reference["vae"].state_dict().items()},
              str(tmp_path / "vae_decoder.safetensors"))
    source = open_checkpoint(tmp_path)
    assert source.layout == "components" and source.has("unet") and not source.has("text_encoder")
    assert unet_difference(reference["unet"], source.load(get_preset(TINY), "unet")) <= TOLERANCE  # fp32: 1e-4
    decoder = source.load(get_preset(TINY), "vae_decoder")
    assert torch.equal(decoder.decoder.post_quant_conv.bias, reference["vae"].post_quant_conv.bias)


def test_a_folder_missing_a_config_is_a_clear_error(tiny_sd15_diffusers, tmp_path):
    folder, _ = tiny_sd15_diffusers
    (tmp_path / "unet").mkdir()
    (tmp_path / "unet" / "diffusion_pytorch_model.safetensors").write_bytes(
        (folder / "unet" / "diffusion_pytorch_model.safetensors").read_bytes())
    (tmp_path / "model_index.json").write_text(json.dumps({"_class_name": "StableDiffusionPipeline"}))
    with pytest.raises(CheckpointError, match="no config.json"):
        load_pretrained(get_preset(TINY), "unet", tmp_path)
    with pytest.raises(CheckpointError, match="text_encoder/config.json"):
        preset_from_diffusers(tmp_path)


def test_a_lone_variant_file_loads_and_two_variants_are_refused(tiny_sd15_diffusers, tmp_path):
    import shutil

    folder, reference = tiny_sd15_diffusers
    shutil.copytree(folder / "unet", tmp_path / "unet")
    weights = tmp_path / "unet" / "diffusion_pytorch_model.safetensors"
    weights.rename(tmp_path / "unet" / "diffusion_pytorch_model.fp16.safetensors")
    ours = load_pretrained(get_preset(TINY), "unet", tmp_path)
    assert unet_difference(reference["unet"], ours) <= TOLERANCE  # fp32, same math: 1e-4
    shutil.copy(tmp_path / "unet" / "diffusion_pytorch_model.fp16.safetensors",
                tmp_path / "unet" / "diffusion_pytorch_model.non_ema.safetensors")
    with pytest.raises(CheckpointError, match="several weights files"):
        load_pretrained(get_preset(TINY), "unet", tmp_path)
