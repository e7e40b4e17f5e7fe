"""Samplers over a UNet callable: DDIM with classifier-free guidance, and one-step (x0) sampling.

Pure numpy float32 so the same code drives torch, onnxruntime, LiteRT and Core ML runners.
The noise schedule is SD-1.5's: scaled-linear betas 0.00085 -> 0.012 over 1000 steps.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Protocol

import numpy as np

TRAIN_TIMESTEPS = 1000

# (latent (B,C,h,w), timestep (B,), text_emb (B,77,D)) -> prediction (B,C,h,w)
UNetFn = Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]


class StepCallback(Protocol):
    def __call__(self, step: int, total: int, timestep: int, latent: np.ndarray) -> None: ...


@dataclass(frozen=True)
class NoiseSchedule:
    alphas_cumprod: np.ndarray  # (1000,) float64

    @classmethod
    def scaled_linear(cls, beta_start: float = 0.00085, beta_end: float = 0.012,
                      steps: int = TRAIN_TIMESTEPS) -> "NoiseSchedule":
        betas = np.linspace(beta_start**0.5, beta_end**0.5, steps, dtype=np.float64) ** 2
        return cls(np.cumprod(1.0 - betas))

    def add_noise(self, x0: np.ndarray, noise: np.ndarray, timestep: int) -> np.ndarray:
        a = self.alphas_cumprod[timestep]
        return (np.sqrt(a) * x0 + np.sqrt(1.0 - a) * noise).astype(np.float32)


def split_prediction(prediction: np.ndarray, sample: np.ndarray, alpha_cumprod: float,
                     prediction_type: str) -> tuple[np.ndarray, np.ndarray]:
    """Any parameterisation -> (predicted x0, predicted noise)."""
    a, s = np.sqrt(alpha_cumprod), np.sqrt(1.0 - alpha_cumprod)
    if prediction_type == "epsilon":
        eps = prediction
        x0 = (sample - s * eps) / a
    elif prediction_type == "v_prediction":
        x0 = a * sample - s * prediction
        eps = a * prediction + s * sample
    elif prediction_type == "sample":
        x0 = prediction
        eps = (sample - a * x0) / s
    else:
        raise ValueError(f"unknown prediction type {prediction_type!r}")
    return x0.astype(np.float32), eps.astype(np.float32)


def guided_prediction(unet: UNetFn, latent: np.ndarray, timestep: int, cond: np.ndarray,
                      uncond: np.ndarray | None, guidance_scale: float) -> np.ndarray:
    """One UNet call; with guidance, the batch is [uncond, cond] as in every SD pipeline."""
    batch = latent.shape[0]
    if uncond is None or guidance_scale == 1.0:
        return unet(latent, np.full((batch,), timestep, np.float32), cond)
    out = unet(
        np.concatenate([latent, latent]),
        np.full((2 * batch,), timestep, np.float32),
        np.concatenate([uncond, cond]),
    )
    out_uncond, out_cond = out[:batch], out[batch:]
    return out_uncond + guidance_scale * (out_cond - out_uncond)


@dataclass(frozen=True)
class DDIMSampler:
    """Deterministic DDIM (eta = 0) with SD-1.5's "leading" spacing and steps_offset = 1."""

    steps: int
    schedule: NoiseSchedule = NoiseSchedule.scaled_linear()

    def __post_init__(self) -> None:
        if not 1 <= self.steps <= TRAIN_TIMESTEPS:
            raise ValueError(f"steps must be in 1..{TRAIN_TIMESTEPS}, got {self.steps}")

    def timesteps(self) -> np.ndarray:
        ratio = TRAIN_TIMESTEPS // self.steps
        return (np.arange(self.steps) * ratio + 1)[::-1].astype(np.int64)

    def sample(self, unet: UNetFn, noise: np.ndarray, cond: np.ndarray, uncond: np.ndarray | None,
               guidance_scale: float, prediction_type: str, callback: StepCallback | None = None) -> np.ndarray:
        latent = noise.astype(np.float32)
        timesteps = self.timesteps()
        alphas = self.schedule.alphas_cumprod
        for index, t in enumerate(timesteps):
            prediction = guided_prediction(unet, latent, int(t), cond, uncond, guidance_scale)
            x0, eps = split_prediction(prediction, latent, alphas[t], prediction_type)
            # SD-1.5 (set_alpha_to_one=False): the last step lands on alphas_cumprod[0], not 1.
            a_prev = alphas[timesteps[index + 1]] if index + 1 < len(timesteps) else alphas[0]
            latent = (np.sqrt(a_prev) * x0 + np.sqrt(1.0 - a_prev) * eps).astype(np.float32)
            if callback is not None:
                callback(index + 1, len(timesteps), int(t), latent)
        return latent


@dataclass(frozen=True)
class OneStepSampler:
    """UFOGen-style: one UNet call from pure noise at the last timestep, keep its x0."""

    timestep: int = TRAIN_TIMESTEPS - 1
    schedule: NoiseSchedule = NoiseSchedule.scaled_linear()
    steps: int = 1

    def sample(self, unet: UNetFn, noise: np.ndarray, cond: np.ndarray, uncond: np.ndarray | None,
               guidance_scale: float, prediction_type: str, callback: StepCallback | None = None) -> np.ndarray:
        latent = noise.astype(np.float32)
        prediction = guided_prediction(unet, latent, self.timestep, cond, uncond, guidance_scale)
        x0, _ = split_prediction(prediction, latent, self.schedule.alphas_cumprod[self.timestep], prediction_type)
        if callback is not None:
            callback(1, 1, self.timestep, x0)
        return x0


SAMPLERS = ("ddim", "onestep")


def make_sampler(name: str, steps: int) -> DDIMSampler | OneStepSampler:
    if name == "ddim":
        return DDIMSampler(steps)
    if name == "onestep":
        return OneStepSampler()
    raise ValueError(f"unknown sampler {name!r}; known: {', '.join(SAMPLERS)}")
