"""The networks of a preset by name, with the example inputs every exporter and counter uses.

Component names are the keys of artifacts, checkpoints and reports:
    text_encoder  input_ids (B,77) int64              -> text_emb (B,77,D)
    unet          latent (B,4,h,w), timestep (B,) f32, text_emb (B,77,D) -> prediction (B,4,h,w)
    vae_decoder   latent (B,4,h,w)                    -> image (B,3,8h,8w) in [-1,1]
    vae_encoder   image (B,3,H,W) in [-1,1]           -> latent (B,4,H/8,W/8)
"""

from __future__ import annotations

import torch
from torch import nn

from .presets import Preset
from .text_encoder import CLIPTextEncoder
from .unet import MobileUNet
from .vae import VAEDecoder, VAEEncoder

COMPONENTS = ("text_encoder", "unet", "vae_decoder", "vae_encoder")


def build_component(preset: Preset, component: str, seed: int = 0) -> nn.Module:
    """Build one network with deterministic random weights (seeded per component), in eval mode."""
    builders = {
        "text_encoder": lambda: CLIPTextEncoder(preset.text_encoder),
        "unet": lambda: MobileUNet(preset.unet),
        "vae_decoder": lambda: VAEDecoder(preset.vae),
        "vae_encoder": lambda: VAEEncoder(preset.vae),
    }
    if component not in builders:
        raise ValueError(f"unknown component {component!r}; known: {', '.join(COMPONENTS)}")
    # Seeding per component keeps one network's weights independent of which others were built.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed * 1000 + COMPONENTS.index(component))
        module = builders[component]()
    return module.eval()


def component_example_inputs(
    preset: Preset, component: str, resolution: int | None = None, batch: int = 1, device: str | torch.device = "cpu"
) -> tuple[torch.Tensor, ...]:
    """Seeded example inputs of the right shapes and dtypes (zeros of the right dtype on meta)."""
    resolution = resolution or preset.resolution
    generator = torch.Generator().manual_seed(0)
    latent_shape = preset.latent_shape(resolution, batch)
    tokens = preset.text_encoder.max_position_embeddings

    def randn(*shape: int) -> torch.Tensor:
        if torch.device(device).type == "meta":
            return torch.empty(shape, device="meta")
        return torch.randn(shape, generator=generator).to(device)

    if component == "text_encoder":
        if torch.device(device).type == "meta":
            return (torch.empty((batch, tokens), dtype=torch.long, device="meta"),)
        ids = torch.randint(0, preset.text_encoder.vocab_size, (batch, tokens), generator=generator)
        return (ids.to(device),)
    if component == "unet":
        timestep = torch.full((batch,), 500.0, device=device)
        return (randn(*latent_shape), timestep, randn(batch, tokens, preset.text_encoder.hidden_size))
    if component == "vae_decoder":
        return (randn(*latent_shape),)
    if component == "vae_encoder":
        return (randn(batch, 3, resolution, resolution),)
    raise ValueError(f"unknown component {component!r}; known: {', '.join(COMPONENTS)}")
