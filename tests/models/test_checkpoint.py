import pytest
import torch
from safetensors.torch import save_file

from md_export.models import CheckpointError, build_component, get_preset, load_component, save_component


@pytest.fixture
def preset():
    return get_preset("mobilediffusion-tiny")


@pytest.mark.parametrize("component", ["text_encoder", "unet", "vae_decoder", "vae_encoder"])
def test_round_trip_restores_identical_weights(tmp_path, preset, component):
    original = build_component(preset, component, seed=1)
    path = save_component(original, tmp_path / f"{component}.safetensors")
    restored = load_component(build_component(preset, component, seed=2), path)
    for key, value in original.state_dict().items():
        assert torch.equal(value, restored.state_dict()[key]), key


def test_missing_unexpected_and_misshaped_keys_are_all_listed(tmp_path, preset):
    state = build_component(preset, "vae_decoder").state_dict()
    state.pop("decoder.conv_in.weight")
    state["decoder.extra.weight"] = torch.zeros(1)
    state["decoder.conv_out.bias"] = torch.zeros(7)
    path = tmp_path / "bad.safetensors"
    save_file(state, str(path))
    with pytest.raises(CheckpointError) as info:
        load_component(build_component(preset, "vae_decoder"), path)
    message = str(info.value)
    assert "missing keys: decoder.conv_in.weight" in message
    assert "unexpected keys: decoder.extra.weight" in message
    assert "decoder.conv_out.bias (checkpoint (7,), model (3,))" in message


def test_corrupt_file_is_a_checkpoint_error(tmp_path, preset):
    path = tmp_path / "unet.safetensors"
    path.write_bytes(b"\x00garbage" * 10)
    with pytest.raises(CheckpointError, match="not a readable safetensors"):
        load_component(build_component(preset, "unet"), path)


def test_save_is_atomic_no_temp_files_left(tmp_path, preset):
    save_component(build_component(preset, "vae_decoder"), tmp_path / "vae_decoder.safetensors")
    assert [p.name for p in tmp_path.iterdir()] == ["vae_decoder.safetensors"]
