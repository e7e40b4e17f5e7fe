"""Named presets: a text encoder, a UNet and a VAE that work together, plus sampling defaults.

`mobilediffusion` per-level block counts (the paper does not publish them; chosen from its text):
- widths 320 / 640 / 1024 at 64x64 / 32x32 / 16x16 latents, three levels (SD-1.5 has four).
- residual blocks: one per down level except two at 16x16 (1, 1, 2), so the up path has (2, 2, 3)
  and the bottleneck one: 4 + 1 + 7 = 12, the paper's "22 -> 12".
- transformers: none at 64x64; one cross-attention-only block after each resnet at 32x32 and at
  the outer 16x16 resnets; the bottleneck holds 15 full (self + cross) blocks. 15 is what lands the
  UNet at 390.9M parameters, +1.3% of the paper's 386M (14 gives 375.4M, 16 gives 406.4M).
- 5 / 10 / 16 heads (64-wide heads), shared K/V, Swish-gated FFN x6, ReLU attention, separable
  3x3 convs below the top level.

The ablation presets walk from `sd15` to `mobilediffusion` one paper optimization at a time
(DESIGN.md section 1), keeping the text encoder and SD-1.5's VAE fixed so only the UNet changes;
`mobilediffusion` is the last step and swaps in the ~9.8M-parameter light decoder.

Every preset P has a twin `P-tiny`, derived with `dataclasses.replace`: same switches, widths
/10, a two-layer 64-wide text encoder (real CLIP vocabulary), 64x64 images; tests run on these.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from .text_encoder import TextEncoderConfig
from .unet_config import UNetConfig
from .vae_config import AutoencoderConfig, VAEConfig

TINY_SUFFIX = "-tiny"
DEFAULT_PRESET = "mobilediffusion"


class UnknownPresetError(KeyError):
    def __init__(self, name: str, known: list[str]):
        super().__init__(name)
        self.name = name
        self.known = known

    def __str__(self) -> str:
        return f"unknown preset {self.name!r}; known presets: {', '.join(self.known)}"


@dataclass(frozen=True)
class Preset:
    name: str
    description: str
    text_encoder: TextEncoderConfig
    unet: UNetConfig
    vae: VAEConfig
    resolution: int = 512  # default image side in pixels
    default_steps: int = 8  # DDIM steps the CLI uses when --steps is not given
    guidance_scale: float = 7.5  # classifier-free guidance for multi-step sampling

    def __post_init__(self) -> None:
        if self.unet.cross_attention_dim != self.text_encoder.hidden_size:
            raise ValueError(f"{self.name}: UNet cross_attention_dim != text encoder hidden_size")
        if self.unet.in_channels != self.vae.latent_channels:
            raise ValueError(f"{self.name}: UNet in_channels != VAE latent_channels")
        factor = self.vae.downsample_factor * self.unet.downsample_factor
        if self.resolution % factor:
            raise ValueError(f"{self.name}: resolution {self.resolution} not divisible by {factor}")

    def latent_shape(self, resolution: int | None = None, batch: int = 1) -> tuple[int, int, int, int]:
        side = (resolution or self.resolution) // self.vae.downsample_factor
        return (batch, self.unet.in_channels, side, side)


# ---- components ---------------------------------------------------------------------------

CLIP_VIT_L14 = TextEncoderConfig()

SD15_UNET = UNetConfig()

SD15_VAE = VAEConfig(decoder=AutoencoderConfig(), encoder=AutoencoderConfig())

# MobileDiffusion's light decoder trained against SD's frozen encoder: half the widths and one
# resnet fewer per level -> 9.66M params (paper: ~9.8M, SD-1.5's decoder: 49.5M).
LIGHT_VAE = VAEConfig(
    decoder=AutoencoderConfig(block_out_channels=(64, 128, 256, 256), layers_per_block=1),
    encoder=AutoencoderConfig(),
)

TAESD = AutoencoderConfig(family="taesd")
TAESD_VAE = VAEConfig(decoder=TAESD, encoder=TAESD, scaling_factor=1.0)

# Step 1 of the ablation: UViT-like layout, three levels 320/640/1024, transformers everywhere,
# the deep stack at the 16x16 bottleneck. Later steps switch one thing each.
ABLATION_BASE_UNET = SD15_UNET.replace(
    block_out_channels=(320, 640, 1024),
    down_layers_per_level=(2, 2, 2),
    transformer_depth=(1, 1, 1),
    self_attention=(True, True, True),
    num_attention_heads=(5, 10, 16),
    mid_transformer_depth=15,
)

# (preset name, what this step changes, the UNet after the step)
_ablation: list[tuple[str, str, UNetConfig]] = [("sd15", "SD-1.5 UNet (baseline)", SD15_UNET)]


def _step(name: str, change: str, **fields) -> None:
    previous = _ablation[-1][2] if len(_ablation) > 1 else ABLATION_BASE_UNET
    _ablation.append((name, change, previous.replace(**fields) if fields else previous))


_step("ablation-1-bottleneck", "3 levels 320/640/1024, transformer stack at 16x16 bottleneck")
_step("ablation-2-cross-attn-only", "no transformer at 64x64; cross-attention only at 32x32 and outer 16x16",
      transformer_depth=(0, 1, 1), self_attention=(False, False, False))
_step("ablation-3-shared-kv", "shared key/value projection", shared_kv=True)
_step("ablation-4-swish", "GELU -> Swish in the gated FFN", ffn_activation="silu")
_step("ablation-5-relu-attention", "softmax -> ReLU attention", attention="relu")
_step("ablation-6-ffn-6x", "FFN expansion 8 -> 6", ffn_expansion=6)
_step("ablation-7-separable-conv", "separable 3x3 convs below the top level", separable_conv=True)
_step("mobilediffusion", "residual blocks 17 -> 12 (SD-1.5: 22), light VAE decoder",
      down_layers_per_level=(1, 1, 2), mid_resnets=1)

MOBILEDIFFUSION_UNET = _ablation[-1][2]

ABLATION_STEPS: tuple[str, ...] = tuple(name for name, _, _ in _ablation)
ABLATION_CHANGES: dict[str, str] = {name: change for name, change, _ in _ablation}


# ---- mobilediffusion-micro: small enough to train on a 2-core CPU in about half an hour ----------
# Same family, every paper switch on (three levels, cross-attention-only transformers outside the
# bottleneck, none at the top level, a self+cross stack at the bottleneck, shared K/V, Swish-gated
# FFN x6, ReLU attention, separable convs below the top level, 1/1/2 residual blocks), at 64x64
# RGB images with a 4x light VAE (16x16x4 latents). The text encoder keeps the real CLIP
# vocabulary and 77-token context (the pipeline's tokenizer pads to 77) but is 2 layers x 64 wide.
# v-prediction: the x0 estimate stays well conditioned at the high-noise steps where a small
# model decides colours and layout. Trained weights ship in models/weights/mobilediffusion-micro/.
MICRO_TEXT_ENCODER = TextEncoderConfig(hidden_size=64, num_hidden_layers=2, num_attention_heads=2,
                                       intermediate_size=256)
# One resnet per down level and one bottleneck transformer: at this width the per-op overhead,
# not FLOPs, sets the CPU step time, so fewer blocks buy more training steps in the same half hour.
MICRO_UNET = MOBILEDIFFUSION_UNET.replace(
    block_out_channels=(32, 64, 96),
    down_layers_per_level=(1, 1, 1),
    num_attention_heads=(1, 2, 2),
    mid_transformer_depth=1,
    cross_attention_dim=MICRO_TEXT_ENCODER.hidden_size,
    norm_groups=16,
    time_embed_dim=128,
    prediction_type="v_prediction",
)
# The VAE trains as a plain autoencoder with the latent pushed towards unit variance, so the
# scaling factor is 1 (SD's 0.18215 normalises a KL-VAE trained elsewhere).
MICRO_VAE_SIDE = AutoencoderConfig(block_out_channels=(16, 32, 64), layers_per_block=1, mid_attention=False,
                                   norm_groups=16)
MICRO_VAE = VAEConfig(decoder=MICRO_VAE_SIDE, encoder=MICRO_VAE_SIDE, scaling_factor=1.0)
MICRO_PRESET = "mobilediffusion-micro"
# Guidance 2, not 5: classifier-free guidance extrapolates away from the unconditional picture, a
# round blob, so at 5 it pushed squares' corners out and their sides in (concave sides that fill
# about 86% of the bounding box: read as circles) and circles into lumpy diamonds. Chosen on
# training-split prompts (`md-export quality --prompts train --num-prompts 120`, 212 pictures),
# never on the held-out set the README reports. Shipped weights: fidelity 95.7 / 95.8 / 92.8% at
# guidance 1.5 / 2 / 3 (squares 69 / 67 / 41 of 96); the same run at 5000 steps 94.9 / 95.2 /
# 93.0%, at 2500 steps 93.0 / 93.2 / 92.3 / 86.9% at 1.5 / 2 / 3 / 5 (squares 55 / 54 / 47 / 18).
MICRO_GUIDANCE = 2.0


def _full_presets() -> dict[str, Preset]:
    presets = {
        "sd15": Preset("sd15", "Stable Diffusion 1.5 layout (860M UNet, SD VAE)", CLIP_VIT_L14, SD15_UNET, SD15_VAE,
                       default_steps=20),
        "mobilediffusion": Preset("mobilediffusion", "MobileDiffusion: every paper optimization on, light decoder",
                                  CLIP_VIT_L14, MOBILEDIFFUSION_UNET, LIGHT_VAE),
        "mobilediffusion-taesd": Preset("mobilediffusion-taesd", "MobileDiffusion UNet with a TAESD decoder",
                                        CLIP_VIT_L14, MOBILEDIFFUSION_UNET, TAESD_VAE),
    }
    presets[MICRO_PRESET] = Preset(MICRO_PRESET, "MobileDiffusion switches at micro scale, trained on captioned "
                                   "shapes and digits (weights ship with the package)", MICRO_TEXT_ENCODER,
                                   MICRO_UNET, MICRO_VAE, resolution=64, default_steps=20,
                                   guidance_scale=MICRO_GUIDANCE)
    for name, change, unet in _ablation[1:-1]:
        presets[name] = Preset(name, f"ablation step: {change}", CLIP_VIT_L14, unet, SD15_VAE)
    return presets


def _tiny_width(width: int) -> int:
    return max(16, width // 10 // 16 * 16)


def tiny_twin(preset: Preset) -> Preset:
    """Same switches, a fraction of the size: what the test-suite runs."""
    text = preset.text_encoder.replace(hidden_size=64, num_hidden_layers=2, num_attention_heads=2, intermediate_size=128)
    u = preset.unet
    unet = u.replace(
        block_out_channels=tuple(_tiny_width(w) for w in u.block_out_channels),
        num_attention_heads=(2,) * u.levels,
        transformer_depth=tuple(min(d, 1) for d in u.transformer_depth),
        mid_transformer_depth=min(u.mid_transformer_depth, 2),
        cross_attention_dim=text.hidden_size,
        norm_groups=8,
        time_embed_dim=4 * _tiny_width(u.block_out_channels[0]),
    )

    def tiny_side(side: AutoencoderConfig) -> AutoencoderConfig:
        return side.replace(block_out_channels=tuple(max(16, w // 8) for w in side.block_out_channels),
                            norm_groups=8, taesd_channels=16)

    vae = preset.vae.replace(decoder=tiny_side(preset.vae.decoder), encoder=tiny_side(preset.vae.encoder))
    return dataclasses.replace(preset, name=preset.name + TINY_SUFFIX, description=preset.description + " (tiny twin)",
                               text_encoder=text, unet=unet, vae=vae, resolution=64)


def _all_presets() -> dict[str, Preset]:
    full = _full_presets()
    everything = dict(full)
    for preset in full.values():
        everything[preset.name + TINY_SUFFIX] = tiny_twin(preset)
    return everything


PRESETS: dict[str, Preset] = _all_presets()


def preset_names() -> list[str]:
    return list(PRESETS)


def get_preset(name: str) -> Preset:
    try:
        return PRESETS[name]
    except KeyError:
        raise UnknownPresetError(name, preset_names()) from None
