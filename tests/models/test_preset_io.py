import dataclasses
import json

import pytest
import torch

from md_export.models import (COMPONENTS, PresetFileError, UnknownPresetError, build_component, get_preset, load_preset_dir,
                    preset_checkpoint_dir, save_preset_dir)
from md_export.models.preset_io import preset_from_dict, preset_to_dict
from md_export.models.unet import MobileUNet


def test_every_named_preset_round_trips_through_json():
    for name in ("mobilediffusion", "sd15-tiny", "mobilediffusion-taesd-tiny"):
        preset = get_preset(name)
        data = json.loads(json.dumps(preset_to_dict(preset)))
        assert preset_from_dict(data) == preset


def test_preset_directory_reloads_config_and_weights(tmp_path):
    preset = get_preset("mobilediffusion-tiny")
    unet = preset.unet.replace(skipped_resnets=(0,), resnet_inner_channels=(8,) * preset.unet.resnet_slots())
    pruned = dataclasses.replace(preset, unet=unet, name="pruned")
    modules = {c: build_component(pruned, c, seed=3) for c in COMPONENTS}
    save_preset_dir(pruned, modules, tmp_path / "model")
    loaded = get_preset(str(tmp_path / "model"))
    assert loaded.unet == unet and loaded.name == str((tmp_path / "model").resolve())
    assert preset_checkpoint_dir(loaded) == (tmp_path / "model").resolve()
    assert sorted(p.name for p in (tmp_path / "model").iterdir()) == sorted(
        ["preset.json"] + [f"{c}.safetensors" for c in COMPONENTS])
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")], "no staging directory left behind"


def test_bad_directories_fail_clearly(tmp_path):
    with pytest.raises(UnknownPresetError):
        get_preset(str(tmp_path / "missing"))
    with pytest.raises(PresetFileError, match="no preset.json"):
        load_preset_dir(tmp_path)
    (tmp_path / "preset.json").write_text('{"format_version": 1, "preset": {"name": "x"}}')
    with pytest.raises(PresetFileError, match="invalid preset description"):
        get_preset(str(tmp_path))


def test_pruning_fields_are_validated():
    config = get_preset("mobilediffusion-tiny").unet
    with pytest.raises(ValueError, match="transformer slots"):
        MobileUNet(config.replace(transformer_depths=(1,)))
    with pytest.raises(ValueError, match="cannot be removed"):
        MobileUNet(config.replace(skipped_resnets=(1,)))  # 32 -> 64 channels: not an identity
    with pytest.raises(ValueError, match="positive"):
        config.replace(ffn_inner_dims=(0,))
    with pytest.raises(ValueError, match="positive"):
        config.replace(attention_heads=(0,))
    blocks = sum(config.default_transformer_depths())
    with pytest.raises(ValueError, match="attention_heads has 1 entries"):
        MobileUNet(config.replace(attention_heads=(1,)))
    with pytest.raises(ValueError, match="can keep 1..2 of them, not 3"):
        MobileUNet(config.replace(attention_heads=(3,) * blocks))  # the tiny UNet has 2 heads per block


def test_default_pruning_fields_change_nothing():
    config = get_preset("mobilediffusion").unet
    assert not config.is_pruned
    with torch.device("meta"):
        assert sum(p.numel() for p in MobileUNet(config).parameters()) == 390_912_068
