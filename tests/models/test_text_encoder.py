"""Our CLIP text transformer against transformers.CLIPTextModel (the numerical reference)."""

import json

import pytest
import torch
from transformers import CLIPTextConfig, CLIPTextModel

from md_export.models import CLIPTextEncoder, CheckpointError, TextEncoderConfig, load_text_encoder_from_hf
from md_export.models.checkpoint import load_state_dict_strict
from md_export.models.convert_transformers import text_encoder_state_dict_from_hf

TINY = dict(vocab_size=1000, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
            max_position_embeddings=77, hidden_act="quick_gelu")


def reference_model(seed=0):
    torch.manual_seed(seed)
    config = CLIPTextConfig(**TINY, eos_token_id=2)
    model = CLIPTextModel(config).eval()
    # random init leaves LayerNorms at identity: perturb them so they are really compared
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "layer_norm" in name:
                p.add_(0.1 * torch.randn_like(p))
    return model


def test_matches_clip_text_model_numerically():
    reference = reference_model()
    ours = CLIPTextEncoder(TextEncoderConfig(**TINY)).eval()
    load_state_dict_strict(ours, text_encoder_state_dict_from_hf(reference.state_dict()), "reference")
    ids = torch.randint(0, TINY["vocab_size"], (2, 77), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = reference(input_ids=ids).last_hidden_state
        actual = ours(ids)
    assert actual.shape == (2, 77, 64)
    assert (actual - expected).abs().max().item() <= 1e-4  # tolerance stated by the foundation issue


def test_loads_a_saved_clip_text_model_directory(tmp_path):
    reference = reference_model(seed=2)
    reference.save_pretrained(tmp_path)
    ours = load_text_encoder_from_hf(tmp_path).eval()
    ids = torch.arange(77)[None] % TINY["vocab_size"]
    with torch.no_grad():
        assert (ours(ids) - reference(input_ids=ids).last_hidden_state).abs().max().item() <= 1e-4


def test_directory_without_weights_is_a_clear_error(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps(TINY))
    with pytest.raises(CheckpointError, match="no .safetensors"):
        load_text_encoder_from_hf(tmp_path)


def test_vit_l14_text_preset_parameter_count():
    with torch.device("meta"):
        model = CLIPTextEncoder(TextEncoderConfig())
    assert sum(p.numel() for p in model.parameters()) == 123_060_480
