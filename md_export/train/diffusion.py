"""Phase 2: text encoder + UNet on the frozen VAE's latents, with the sampler's own noise schedule
(md_export/samplers.py) so what is trained is what DDIM samples. Captions are dropped to "" with
probability `cfg_dropout`: the unconditional branch classifier-free guidance needs (the pipeline
encodes "" as its negative prompt)."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from md_export.models import CLIPTextEncoder, MobileUNet

from ..samplers import TRAIN_TIMESTEPS, NoiseSchedule

_ALPHAS = torch.from_numpy(NoiseSchedule.scaled_linear().alphas_cumprod).float()
HIGH_NOISE_FROM = int(TRAIN_TIMESTEPS * 0.6)  # "high noise": the noisiest 40% of the timesteps


def draw_timesteps(batch: int, generator: torch.Generator, high_noise_fraction: float = 0.0) -> torch.Tensor:
    """Uniform timesteps; with `high_noise_fraction`, that share of the batch (in expectation) is
    redrawn from [HIGH_NOISE_FROM, TRAIN_TIMESTEPS). At 0 the draws are exactly the uniform ones."""
    timesteps = torch.randint(0, TRAIN_TIMESTEPS, (batch,), generator=generator)
    if high_noise_fraction:
        high = torch.rand(batch, generator=generator) < high_noise_fraction
        redrawn = torch.randint(HIGH_NOISE_FROM, TRAIN_TIMESTEPS, (batch,), generator=generator)
        timesteps = torch.where(high, redrawn, timesteps)
    return timesteps


def diffusion_target(prediction_type: str, x0: torch.Tensor, noise: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
    a, s = alpha.sqrt(), (1.0 - alpha).sqrt()
    if prediction_type == "epsilon":
        return noise
    if prediction_type == "v_prediction":
        return a * noise - s * x0
    if prediction_type == "sample":
        return x0
    raise ValueError(f"unknown prediction type {prediction_type!r}")


def diffusion_loss(text_encoder: CLIPTextEncoder, unet: MobileUNet, latents: torch.Tensor, token_ids: torch.Tensor,
                   empty_ids: torch.Tensor, cfg_dropout: float, generator: torch.Generator,
                   input_perturbation: float = 0.0, high_noise_fraction: float = 0.0) -> torch.Tensor:
    batch = latents.shape[0]
    drop = torch.rand(batch, generator=generator) < cfg_dropout
    ids = torch.where(drop[:, None], empty_ids[None, :].expand_as(token_ids), token_ids)
    timesteps = draw_timesteps(batch, generator, high_noise_fraction)
    noise = torch.randn(latents.shape, generator=generator)
    alpha = _ALPHAS[timesteps].view(batch, 1, 1, 1)
    seen = noise
    if input_perturbation:
        seen = noise + input_perturbation * torch.randn(latents.shape, generator=generator)
    noisy = alpha.sqrt() * latents + (1.0 - alpha).sqrt() * seen
    prediction = unet(noisy, timesteps.float(), text_encoder(ids))
    return F.mse_loss(prediction, diffusion_target(unet.config.prediction_type, latents, noise, alpha))


def caption_token_ids(captions: list[str], tokenizer) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, 77) ids of every caption (tokenised once per distinct caption) and the ids of ""."""
    distinct = sorted(set(captions))
    table = dict(zip(distinct, tokenizer(distinct))) if distinct else {}
    ids = np.stack([table[c] for c in captions]) if captions else np.zeros((0, tokenizer.context_length), np.int64)
    return torch.from_numpy(ids), torch.from_numpy(tokenizer("")[0])
