"""transformers CLIPTextModel weights in every form users have them: a save_pretrained folder,
the hub's `text_model.`-prefixed files (transformers 4 names), a bare text_encoder.safetensors, a
whole CLIPModel."""

import json

import pytest
import torch
from safetensors.torch import save_file
from transformers import CLIPTextConfig, CLIPTextModel

from md_export.models import (CheckpointError, ConfigMismatchError, get_preset, load_text_encoder_from_hf,
                              open_checkpoint)
from md_export.models.convert_transformers import text_encoder_state_dict_from_hf

TINY = "sd15-tiny"  # its text encoder: CLIP vocabulary, 2 layers x 64 wide, 2 heads, MLP 128
HF_CONFIG = dict(vocab_size=49408, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=2,
                 max_position_embeddings=77, hidden_act="quick_gelu")


@pytest.fixture(scope="module")
def reference():
    torch.manual_seed(0)
    model = CLIPTextModel(CLIPTextConfig(**HF_CONFIG)).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))  # norms off identity, so they are compared too
    return model


def weights(model, prefixed: bool) -> dict:
    """The model's weights as the hub stores them (`text_model.` first) or as transformers 5 saves them."""
    state = {k.removeprefix("text_model."): v.contiguous() for k, v in model.state_dict().items()}
    return {("text_model." + k if prefixed else k): v for k, v in state.items()}


def difference(ours, reference) -> float:
    ids = torch.randint(0, 49408, (2, 77), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        return (ours(ids) - reference(input_ids=ids).last_hidden_state).abs().max().item()


@pytest.mark.parametrize("prefixed", [True, False], ids=["text_model-prefix", "no-prefix"])
def test_folder_and_file_with_or_without_prefix(reference, tmp_path, prefixed):
    folder = tmp_path / "text_encoder"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(HF_CONFIG))
    save_file(weights(reference, prefixed), str(folder / "model.safetensors"))
    assert difference(load_text_encoder_from_hf(folder).eval(), reference) <= 1e-4  # fp32, same math: 1e-4
    # a bare file: the shape comes from the preset's config
    loose = load_text_encoder_from_hf(folder / "model.safetensors", get_preset(TINY).text_encoder).eval()
    assert difference(loose, reference) <= 1e-4  # fp32, same math: 1e-4


@pytest.mark.parametrize("prefixed", [True, False], ids=["text_model-prefix", "no-prefix"])
def test_components_folder_text_encoder_file(reference, tmp_path, prefixed):
    save_file(weights(reference, prefixed), str(tmp_path / "text_encoder.safetensors"))
    ours = open_checkpoint(tmp_path).load(get_preset(TINY), "text_encoder")
    assert difference(ours, reference) <= 1e-4  # fp32, same math: 1e-4


def test_whole_clip_model_keys_are_dropped_and_position_ids_ignored(reference):
    state = weights(reference, prefixed=True)
    state.update({"vision_model.embeddings.class_embedding": torch.zeros(8), "logit_scale": torch.tensor(2.6),
                  "text_projection.weight": torch.zeros(8, 64),
                  "text_model.embeddings.position_ids": torch.arange(77)[None]})
    mapped = text_encoder_state_dict_from_hf(state)
    assert set(mapped) == set(weights(reference, prefixed=False))


def test_an_unmapped_key_is_named(reference):
    state = weights(reference, prefixed=True)
    state["text_model.encoder.layers.0.adapter.weight"] = torch.zeros(2)
    with pytest.raises(CheckpointError) as info:
        text_encoder_state_dict_from_hf(state, "te.safetensors")
    assert info.value.unmapped == ["text_model.encoder.layers.0.adapter.weight"]


def test_a_config_that_differs_from_the_preset_names_the_field(reference, tmp_path):
    folder = tmp_path / "text_encoder"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({**HF_CONFIG, "num_hidden_layers": 3}))
    save_file(weights(reference, prefixed=True), str(folder / "model.safetensors"))
    with pytest.raises(ConfigMismatchError) as info:
        open_checkpoint(tmp_path).load(get_preset(TINY), "text_encoder")
    assert info.value.fields == ["num_hidden_layers"] and "preset 2, checkpoint 3" in str(info.value)
