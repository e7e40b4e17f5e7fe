import dataclasses

import pytest

from md_export.models import PRESETS, UnknownPresetError, get_preset
from md_export.models.presets import ABLATION_STEPS, TINY_SUFFIX


def test_every_preset_has_a_tiny_twin_with_the_same_switches():
    full = [name for name in PRESETS if not name.endswith(TINY_SUFFIX)]
    assert {"sd15", "mobilediffusion"} <= set(full)
    for name in full:
        twin = get_preset(name + TINY_SUFFIX)
        for switch in ("shared_kv", "attention", "ffn_activation", "ffn_expansion", "separable_conv",
                       "self_attention", "down_layers_per_level", "mid_resnets", "prediction_type"):
            assert getattr(twin.unet, switch) == getattr(PRESETS[name].unet, switch), (name, switch)
        assert twin.vae.decoder.family == PRESETS[name].vae.decoder.family


def test_configs_are_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        get_preset("mobilediffusion").unet.shared_kv = False


def test_ablation_walks_from_sd15_to_mobilediffusion_changing_the_unet_each_step():
    assert ABLATION_STEPS[0] == "sd15" and ABLATION_STEPS[-1] == "mobilediffusion"
    unets = [get_preset(name).unet for name in ABLATION_STEPS]
    for before, after in zip(unets, unets[1:]):
        assert before != after


def test_unknown_preset_names_the_known_ones():
    with pytest.raises(UnknownPresetError, match="mobilediffusion-tiny"):
        get_preset("mobilediffusion-huge")
