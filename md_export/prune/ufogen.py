"""UFOGen one-step fine-tuning objective (Xu et al. 2023), as MobileDiffusion uses it.

    x0 (real latents) ──q(x_t|x0)──> x_t ──G = UNet, read as x0-prediction──> x0_fake
    real_prev = q(x_{t-1} | x0)        fake_prev = q(x_{t-1} | x0_fake)      (fresh noise each)
    D(x_{t-1}, t-1, text) -> one logit per sample; D starts as a copy of the UNet whose last
    layer (conv_out) is zeroed, so its first logits are 0 and it starts from the UNet's features.
    discriminator loss: softplus(-D(real_prev)) + softplus(D(fake_prev.detach()))
    generator loss:     softplus(-D(fake_prev)) + rec_weight * ||x0_fake - x0||^2
UFOGen's change to DDGAN: both samples go through the *forward* marginal q(x_{t-1}|x0), not the
posterior q(x_{t-1}|x_t, x0), which is what makes one-step sampling from pure noise work.
The generator loss flows through D with D's parameters frozen (D gets no gradient from it), and
the discriminator loss sees the fake as a constant (G gets no gradient from it).
"""

from __future__ import annotations

import copy
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from md_export.models.unet import MobileUNet

from ..samplers import NoiseSchedule
from .errors import PruneError


def alphas_cumprod() -> torch.Tensor:
    return torch.from_numpy(NoiseSchedule.scaled_linear().alphas_cumprod).float()


def q_sample(x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor, alphas: torch.Tensor) -> torch.Tensor:
    """Forward marginal q(x_t | x0) = N(sqrt(a_t) x0, (1 - a_t) I)."""
    a = alphas.to(x0.device)[t].view(-1, 1, 1, 1)
    return a.sqrt() * x0 + (1.0 - a).sqrt() * noise


def predict_x0(unet: nn.Module, x_t: torch.Tensor, t: torch.Tensor, text_emb: torch.Tensor, prediction_type: str,
               alphas: torch.Tensor) -> torch.Tensor:
    """The UNet as an x0 predictor, whatever its parameterisation."""
    out = unet(x_t, t.float(), text_emb)
    a = alphas.to(x_t.device)[t].view(-1, 1, 1, 1)
    if prediction_type == "sample":
        return out
    if prediction_type == "epsilon":
        return (x_t - (1.0 - a).sqrt() * out) / a.sqrt()
    if prediction_type == "v_prediction":
        return a.sqrt() * x_t - (1.0 - a).sqrt() * out
    raise PruneError(f"unknown prediction type {prediction_type!r}")


class UNetDiscriminator(nn.Module):
    """A copy of the UNet with a zeroed last layer; the logit is the mean of its output map."""

    def __init__(self, unet: MobileUNet):
        super().__init__()
        self.unet = copy.deepcopy(unet)
        with torch.no_grad():
            self.unet.conv_out.weight.zero_()
            self.unet.conv_out.bias.zero_()

    def forward(self, x: torch.Tensor, t: torch.Tensor, text_emb: torch.Tensor) -> torch.Tensor:
        return self.unet(x, t.float(), text_emb).mean(dim=(1, 2, 3))


@contextmanager
def frozen(module: nn.Module):
    """Gradients flow through `module` to its inputs, never into its parameters."""
    flags = [(p, p.requires_grad) for p in module.parameters()]
    for p, _ in flags:
        p.requires_grad_(False)
    try:
        yield module
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)


@dataclass
class UFOGenForward:
    t: torch.Tensor  # (B,) long, in [1, 999]
    x0_fake: torch.Tensor
    real_prev: torch.Tensor
    fake_prev: torch.Tensor


def ufogen_forward(generator: nn.Module, x0: torch.Tensor, text_emb: torch.Tensor, prediction_type: str,
                   alphas: torch.Tensor, rng: torch.Generator) -> UFOGenForward:
    batch = x0.shape[0]
    t = torch.randint(1, alphas.shape[0], (batch,), generator=rng).to(x0.device)
    noises = [torch.randn(x0.shape, generator=rng).to(x0.device) for _ in range(3)]
    x_t = q_sample(x0, t, noises[0], alphas)
    x0_fake = predict_x0(generator, x_t, t, text_emb, prediction_type, alphas)
    real_prev = q_sample(x0, t - 1, noises[1], alphas)
    fake_prev = q_sample(x0_fake, t - 1, noises[2], alphas)
    return UFOGenForward(t, x0_fake, real_prev, fake_prev)


def discriminator_loss(disc: nn.Module, fwd: UFOGenForward, text_emb: torch.Tensor) -> torch.Tensor:
    real = disc(fwd.real_prev, fwd.t - 1, text_emb)
    fake = disc(fwd.fake_prev.detach(), fwd.t - 1, text_emb)
    return F.softplus(-real).mean() + F.softplus(fake).mean()


def generator_loss(disc: nn.Module, fwd: UFOGenForward, x0: torch.Tensor, text_emb: torch.Tensor,
                   rec_weight: float) -> dict[str, torch.Tensor]:
    with frozen(disc):
        adversarial = F.softplus(-disc(fwd.fake_prev, fwd.t - 1, text_emb)).mean()
    reconstruction = F.mse_loss(fwd.x0_fake, x0)
    return {"generator": adversarial + rec_weight * reconstruction, "adversarial": adversarial,
            "reconstruction": reconstruction}


@dataclass(frozen=True)
class UFOGenSettings:
    steps: int
    batch_size: int = 2
    generator_lr: float = 1e-5
    discriminator_lr: float = 1e-5
    rec_weight: float = 1.0
    seed: int = 0

    def __post_init__(self) -> None:
        if self.steps < 1 or self.batch_size < 1:
            raise PruneError("UFOGen steps and batch size must be at least 1")


class UFOGenTrainer:
    """Alternating updates: discriminator first, then generator, on each batch."""

    def __init__(self, generator: MobileUNet, settings: UFOGenSettings, prediction_type: str | None = None):
        self.generator = generator.train()
        self.discriminator = UNetDiscriminator(generator).train()
        self.prediction_type = prediction_type or generator.config.prediction_type
        self.settings = settings
        self.alphas = alphas_cumprod()
        self.rng = torch.Generator().manual_seed(settings.seed)
        self.g_opt = torch.optim.AdamW(self.generator.parameters(), lr=settings.generator_lr, weight_decay=0.0)
        self.d_opt = torch.optim.AdamW(self.discriminator.parameters(), lr=settings.discriminator_lr,
                                       weight_decay=0.0)

    def step(self, x0: torch.Tensor, text_emb: torch.Tensor) -> dict[str, float]:
        fwd = ufogen_forward(self.generator, x0, text_emb, self.prediction_type, self.alphas, self.rng)
        d_loss = discriminator_loss(self.discriminator, fwd, text_emb)
        self.d_opt.zero_grad(set_to_none=True)
        d_loss.backward()
        self.d_opt.step()
        g = generator_loss(self.discriminator, fwd, x0, text_emb, self.settings.rec_weight)
        self.g_opt.zero_grad(set_to_none=True)
        g["generator"].backward()
        self.g_opt.step()
        return {"discriminator": float(d_loss.detach()), **{k: float(v.detach()) for k, v in g.items()}}

    def state_dict(self) -> dict:
        return {"generator": self.generator.state_dict(), "discriminator": self.discriminator.state_dict(),
                "g_opt": self.g_opt.state_dict(), "d_opt": self.d_opt.state_dict(), "rng": self.rng.get_state()}

    def load_state_dict(self, state: dict) -> None:
        self.generator.load_state_dict(state["generator"])
        self.discriminator.load_state_dict(state["discriminator"])
        self.g_opt.load_state_dict(state["g_opt"])
        self.d_opt.load_state_dict(state["d_opt"])
        self.rng.set_state(state["rng"])


@torch.no_grad()
def reconstruction_error(generator: nn.Module, x0: torch.Tensor, text_emb: torch.Tensor, prediction_type: str,
                         seed: int = 123) -> float:
    """||x0_fake - x0||^2 on fixed timesteps and noise: the number a few steps must bring down."""
    was_training = generator.training
    generator.eval()
    rng = torch.Generator().manual_seed(seed)
    fwd = ufogen_forward(generator, x0, text_emb, prediction_type, alphas_cumprod(), rng)
    generator.train(was_training)
    return float(F.mse_loss(fwd.x0_fake, x0))
