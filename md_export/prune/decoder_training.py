"""Train the light VAE decoder against a frozen encoder on real photos (or distill a teacher decoder).

    photo crop x ──frozen encoder──> z ──decoder──> x_hat
    loss = |x_hat - x| (L1: sharper than MSE at the same PSNR)  [+ teacher_weight * MSE(x_hat, teacher(z))]
Evaluation after every epoch (and before the first): reconstruction PSNR on the centred crop of
each photo, 10*log10(peak^2 / MSE) with peak-to-peak 2 for images in [-1, 1] (= 8-bit PSNR).
A state file beside the output makes the run resumable at epoch granularity.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from .checkpointing import load_state, save_state
from .distill import pick_device
from .errors import PruneError
from .photos import center_crops, load_photos, random_crops

STATE_FILE = "decoder_state.pt"
Progress = Callable[[int, int, int, int, float], None]  # epoch, epochs, step, steps, loss


@dataclass(frozen=True)
class DecoderTrainSettings:
    epochs: int = 2
    steps_per_epoch: int = 20
    batch_size: int = 2
    resolution: int = 64  # image side of the crops (the tests use the tiny presets' 64)
    learning_rate: float = 2e-4
    teacher_weight: float = 1.0  # used only when a teacher decoder is given
    seed: int = 0
    device: str | None = None

    def __post_init__(self) -> None:
        if min(self.epochs, self.steps_per_epoch, self.batch_size) < 1:
            raise PruneError("epochs, steps per epoch and batch size must be at least 1")
        if self.resolution < 8 or self.resolution % 8:
            raise PruneError(f"resolution must be a positive multiple of 8, got {self.resolution}")


def image_psnr_db(reference: torch.Tensor, actual: torch.Tensor) -> float:
    mse = float(F.mse_loss(actual.clamp(-1, 1), reference))
    return 200.0 if mse == 0 else 10.0 * math.log10(4.0 / mse)


@torch.no_grad()
def reconstruction_psnr(decoder: nn.Module, encoder: nn.Module, images: torch.Tensor) -> float:
    was_training = decoder.training
    decoder.eval()
    out = decoder(encoder(images))
    decoder.train(was_training)
    return round(image_psnr_db(images, out), 3)


def train_decoder(decoder: nn.Module, encoder: nn.Module, settings: DecoderTrainSettings, work_dir: str | Path,
                  teacher: nn.Module | None = None, progress: Progress | None = None) -> list[dict]:
    """Train `decoder` in place; returns one row per epoch: {epoch, loss, psnr_db} (epoch 0 = before)."""
    device = pick_device(settings.device)
    encoder = encoder.to(device).eval().requires_grad_(False)
    if teacher is not None:
        teacher = teacher.to(device).eval().requires_grad_(False)
    decoder = decoder.to(device).train()
    optimizer = torch.optim.AdamW(decoder.parameters(), lr=settings.learning_rate, weight_decay=0.0)
    photos = load_photos()
    evaluation = center_crops(photos, settings.resolution).to(device)
    state_path = Path(work_dir) / STATE_FILE
    state = load_state(state_path, device)
    if state is not None:
        if state["settings"]["resolution"] != settings.resolution:
            raise PruneError(f"{state_path} was trained at another resolution; remove it to start over")
        decoder.load_state_dict(state["decoder"])
        optimizer.load_state_dict(state["optimizer"])
        history = state["history"]
    else:
        history = [{"epoch": 0, "loss": None, "psnr_db": reconstruction_psnr(decoder, encoder, evaluation)}]
    for epoch in range(len(history), settings.epochs + 1):
        total = 0.0
        for step in range(settings.steps_per_epoch):
            # batch depends only on (seed, epoch, step): a resumed run sees the same data
            rng = torch.Generator().manual_seed((settings.seed * 10007 + epoch) * 100003 + step)
            images, _ = random_crops(photos, settings.resolution, settings.batch_size, rng)
            images = images.to(device)
            with torch.no_grad():
                latents = encoder(images)
            out = decoder(latents)
            loss = F.l1_loss(out, images)
            if teacher is not None:
                with torch.no_grad():
                    target = teacher(latents)
                loss = loss + settings.teacher_weight * F.mse_loss(out, target)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total += float(loss.detach())
            if progress is not None:
                progress(epoch, settings.epochs, step + 1, settings.steps_per_epoch, float(loss.detach()))
        history.append({"epoch": epoch, "loss": round(total / settings.steps_per_epoch, 6),
                        "psnr_db": reconstruction_psnr(decoder, encoder, evaluation)})
        save_state({"decoder": decoder.state_dict(), "optimizer": optimizer.state_dict(), "history": history,
                    "settings": asdict(settings)}, state_path)
    decoder.eval().cpu()
    encoder.cpu()
    return history
