import pytest
import torch

torch.set_num_threads(2)


@pytest.fixture
def seeded():
    torch.manual_seed(0)


# ---- tiny diffusers / transformers pipelines (bring-your-own-weights tests) -----------------

# The diffusers configs of `sd15-tiny`: 4 levels 32/64/128/128, CrossAttnDownBlock2D x3 +
# DownBlock2D, 2 heads (diffusers' attention_head_dim holds the head count), text width 64.
TINY_SD15_UNET = dict(sample_size=8, block_out_channels=(32, 64, 128, 128), layers_per_block=2, attention_head_dim=2,
                      cross_attention_dim=64, norm_num_groups=8)
TINY_SD15_VAE = dict(block_out_channels=(16, 32, 64, 64), down_block_types=("DownEncoderBlock2D",) * 4,
                     up_block_types=("UpDecoderBlock2D",) * 4, layers_per_block=2, norm_num_groups=8)
TINY_SD15_TEXT = dict(vocab_size=49408, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                      num_attention_heads=2, max_position_embeddings=77, hidden_act="quick_gelu")


def _perturbed(module, seed):
    """Random init leaves norms at identity and some layers at zero: move every parameter so the
    comparison exercises all of them."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in module.parameters():
            parameter.add_(0.05 * torch.randn(parameter.shape, generator=generator))
    return module.eval()


def build_diffusers_pipeline(directory, unet=None, vae=None, text=None, prediction_type="epsilon", seed=0,
                             safe_serialization=True):
    """Write a diffusers pipeline folder (unet/, vae/, text_encoder/, scheduler/, model_index.json)
    with random weights; returns the three reference modules (eval mode)."""
    import json
    from pathlib import Path

    import torch
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    directory = Path(directory)
    torch.manual_seed(seed)
    modules = {
        "unet": _perturbed(UNet2DConditionModel(**{**TINY_SD15_UNET, **(unet or {})}), seed + 1),
        "vae": _perturbed(AutoencoderKL(**{**TINY_SD15_VAE, **(vae or {})}), seed + 2),
        "text_encoder": _perturbed(CLIPTextModel(CLIPTextConfig(**{**TINY_SD15_TEXT, **(text or {})})), seed + 3),
    }
    for name, module in modules.items():
        module.save_pretrained(directory / name, safe_serialization=safe_serialization)
    (directory / "scheduler").mkdir(parents=True, exist_ok=True)
    (directory / "scheduler" / "scheduler_config.json").write_text(json.dumps(
        {"_class_name": "DDIMScheduler", "num_train_timesteps": 1000, "prediction_type": prediction_type}))
    (directory / "model_index.json").write_text(json.dumps(
        {"_class_name": "StableDiffusionPipeline", "unet": ["diffusers", "UNet2DConditionModel"],
         "vae": ["diffusers", "AutoencoderKL"], "text_encoder": ["transformers", "CLIPTextModel"]}))
    return modules


@pytest.fixture(scope="session")
def make_diffusers_pipeline():
    """`make_diffusers_pipeline(directory, unet={...overrides}, ...)` -> reference modules."""
    pytest.importorskip("diffusers")
    return build_diffusers_pipeline


@pytest.fixture(scope="session")
def tiny_sd15_diffusers(tmp_path_factory, make_diffusers_pipeline):
    """A diffusers SD-1.5-layout pipeline folder whose configs are exactly `sd15-tiny`'s."""
    directory = tmp_path_factory.mktemp("sd15_tiny_diffusers")
    modules = make_diffusers_pipeline(directory)
    return directory, modules
