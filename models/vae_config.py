"""VAE configuration: one decoder and its matching encoder.

Every decoder maps the UNet's latent space (already multiplied by `scaling_factor`) to an image in
[-1, 1]; every encoder maps an image in [-1, 1] to the mean latent of that space. Each family's
own conventions (SD's 0.18215 scale, TAESD's [0, 1] images) live inside the modules, so the
pipeline and every exported artifact share one interface.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

FAMILIES = ("kl", "taesd")


@dataclass(frozen=True)
class AutoencoderConfig:
    """One side (decoder or encoder) of a VAE."""

    family: str = "kl"  # kl: diffusers AutoencoderKL layout; taesd: conv+ReLU tiny autoencoder
    latent_channels: int = 4  # channels of the latent space
    block_out_channels: tuple[int, ...] = (128, 256, 512, 512)  # kl: width per level (top first)
    layers_per_block: int = 2  # kl: resnets per level (decoder uses one more)
    mid_attention: bool = True  # kl: single-head self-attention in the bottleneck
    norm_groups: int = 32  # kl: GroupNorm groups
    quant_conv: bool = True  # kl: 1x1 quant_conv (encoder) / post_quant_conv (decoder)
    taesd_channels: int = 64  # taesd: width of every conv
    taesd_blocks: tuple[int, ...] = (3, 3, 3, 1)  # taesd: residual blocks per stage (decoder order)

    def __post_init__(self) -> None:
        if self.family not in FAMILIES:
            raise ValueError(f"AutoencoderConfig.family {self.family!r} not in {FAMILIES}")

    @property
    def downsample_factor(self) -> int:
        stages = len(self.block_out_channels) if self.family == "kl" else len(self.taesd_blocks)
        return 2 ** (stages - 1)

    def replace(self, **changes) -> "AutoencoderConfig":
        return dataclasses.replace(self, **changes)


@dataclass(frozen=True)
class VAEConfig:
    decoder: AutoencoderConfig  # the network shipped to phones
    encoder: AutoencoderConfig  # the frozen encoder: real latents of real photos for calibration/parity
    scaling_factor: float = 0.18215  # latent std normaliser of the encoder's space (SD-1.5: 0.18215)

    def __post_init__(self) -> None:
        if self.decoder.latent_channels != self.encoder.latent_channels:
            raise ValueError("VAE encoder and decoder disagree on latent_channels")
        if self.decoder.downsample_factor != self.encoder.downsample_factor:
            raise ValueError("VAE encoder and decoder disagree on the downsampling factor")

    @property
    def latent_channels(self) -> int:
        return self.decoder.latent_channels

    @property
    def downsample_factor(self) -> int:
        return self.decoder.downsample_factor

    def replace(self, **changes) -> "VAEConfig":
        return dataclasses.replace(self, **changes)
