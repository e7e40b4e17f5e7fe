"""VAE decoder / encoder components with one interface for every family.

`VAEDecoder`: latent in the UNet's space (B,C,h,w) -> image (B,3,8h,8w) in [-1, 1].
`VAEEncoder`: image in [-1, 1] -> latent in the UNet's space (the mean, times scaling_factor).
"""

from __future__ import annotations

import torch
from torch import nn

from .vae_config import AutoencoderConfig, VAEConfig
from .vae_kl import KLDecoder, KLEncoder
from .vae_taesd import TAESDDecoder, TAESDEncoder


class VAEDecoder(nn.Module):
    input_names = ("latent",)
    output_names = ("image",)

    def __init__(self, config: VAEConfig):
        super().__init__()
        self.config = config
        self.family = config.decoder.family
        self.inverse_scale = 1.0 / config.scaling_factor
        self.decoder = KLDecoder(config.decoder) if self.family == "kl" else TAESDDecoder(config.decoder)

    def forward(self, latent: torch.Tensor) -> torch.Tensor:
        image = self.decoder(latent * self.inverse_scale)
        if self.family == "taesd":  # TAESD decodes to [0, 1]
            image = image * 2.0 - 1.0
        return image


class VAEEncoder(nn.Module):
    input_names = ("image",)
    output_names = ("latent",)

    def __init__(self, config: VAEConfig):
        super().__init__()
        self.config = config
        self.family = config.encoder.family
        self.scale = config.scaling_factor
        self.encoder = KLEncoder(config.encoder) if self.family == "kl" else TAESDEncoder(config.encoder)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        if self.family == "taesd":  # TAESD encodes [0, 1] images
            image = (image + 1.0) * 0.5
        return self.encoder(image) * self.scale


def build_vae_decoder(config: VAEConfig) -> VAEDecoder:
    return VAEDecoder(config)


def build_vae_encoder(config: VAEConfig) -> VAEEncoder:
    return VAEEncoder(config)


__all__ = ["AutoencoderConfig", "VAEConfig", "VAEDecoder", "VAEEncoder", "build_vae_decoder", "build_vae_encoder"]
