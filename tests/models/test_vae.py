import pytest
import torch

from md_export.models import VAEDecoder, build_component, component_example_inputs, get_preset
from md_export.models.presets import LIGHT_VAE, SD15_VAE, TAESD_VAE


def n_params(module) -> int:
    return sum(p.numel() for p in module.parameters())


def test_decoder_parameter_counts():
    with torch.device("meta"):
        sd = VAEDecoder(SD15_VAE)
        light = VAEDecoder(LIGHT_VAE)
        taesd = VAEDecoder(TAESD_VAE)
    assert n_params(sd) == 49_490_199  # diffusers AutoencoderKL decoder + post_quant_conv
    assert abs(n_params(light) - 9.8e6) / 9.8e6 < 0.10  # paper: ~9.8M
    assert abs(n_params(taesd) - 1.22e6) / 1.22e6 < 0.02  # TAESD decoder: 1.22M


@pytest.mark.parametrize("name", ["sd15-tiny", "mobilediffusion-tiny", "mobilediffusion-taesd-tiny"])
def test_encoder_decoder_shapes(name):
    preset = get_preset(name)
    encoder, decoder = build_component(preset, "vae_encoder"), build_component(preset, "vae_decoder")
    (image,) = component_example_inputs(preset, "vae_encoder")
    with torch.no_grad():
        latent = encoder(image.clamp(-1, 1))
        decoded = decoder(latent)
    assert latent.shape == preset.latent_shape()
    assert decoded.shape == image.shape
    assert torch.isfinite(decoded).all()


def test_taesd_decoder_maps_to_minus_one_one_convention():
    preset = get_preset("mobilediffusion-taesd-tiny")
    decoder = build_component(preset, "vae_decoder")
    with torch.no_grad():
        for p in decoder.parameters():
            p.zero_()
        out = decoder(torch.zeros(preset.latent_shape()))
    assert torch.allclose(out, torch.full_like(out, -1.0))  # TAESD 0 -> image -1
