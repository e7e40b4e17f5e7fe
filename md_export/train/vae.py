"""Phase 1: the light VAE as a plain autoencoder whose latents are pushed towards zero mean and
unit variance per channel (so the preset's scaling factor is 1 and the diffusion model sees
unit-scale latents). The decoder learns on slightly noised latents: the UNet's latents are never
exact, and a decoder that tolerates small errors gives cleaner pictures."""

from __future__ import annotations

import torch

from md_export.models import VAEDecoder, VAEEncoder

LATENT_NOISE = 0.1  # std of the noise added to latents before decoding, in training only
LATENT_REG = 0.05  # weight of the per-channel mean / variance penalty
SHAPE_WEIGHT = 10.0  # extra loss weight of fully saturated pixels
# Weight of the L1 distance between the images' horizontal and vertical pixel differences. Without
# it the 4x autoencoder rounds every corner: held-out scenes encoded and decoded after 2500 steps
# read 88.5% of shapes right to the shape scorer (squares -> circles), 96.7% with it (same steps,
# seed and data; 300 steps without it, the old recipe: 36%). A model cannot draw what its decoder
# cannot show.
EDGE_WEIGHT = 2.0


def vae_loss(encoder: VAEEncoder, decoder: VAEDecoder, images: torch.Tensor, generator: torch.Generator
             ) -> tuple[torch.Tensor, dict[str, float]]:
    latent = encoder(images)
    noisy = latent + LATENT_NOISE * torch.randn(latent.shape, generator=generator)
    recon = decoder(noisy)
    # Shapes cover a small part of a mostly grey picture: weighting the saturated (shape) pixels
    # makes the autoencoder keep their colours instead of spending itself on the background.
    saturation = (images.amax(dim=1, keepdim=True) - images.amin(dim=1, keepdim=True)) / 2.0
    weight = 1.0 + SHAPE_WEIGHT * saturation
    error = (recon - images).abs() + (recon - images).pow(2)
    reconstruction = (weight * error).mean() / weight.mean()
    edges = sum((torch.diff(recon, dim=d) - torch.diff(images, dim=d)).abs().mean() for d in (2, 3))
    mean = latent.mean(dim=(0, 2, 3))
    var = latent.var(dim=(0, 2, 3))
    regulariser = (mean.pow(2) + (var - 1.0).pow(2)).mean()
    loss = reconstruction + EDGE_WEIGHT * edges + LATENT_REG * regulariser
    return loss, {"loss": loss.item(), "reconstruction": reconstruction.item(), "edges": edges.item(),
                  "latent_var": var.mean().item()}


@torch.no_grad()
def encode_all(encoder: VAEEncoder, images: torch.Tensor, batch: int = 256) -> torch.Tensor:
    encoder.eval()
    return torch.cat([encoder(images[i:i + batch]) for i in range(0, len(images), batch)])
