"""`md-export train`: the VAE first, then text encoder + UNet; resumable, deterministic for a seed.

OUT/ after a run:
    text_encoder.safetensors unet.safetensors vae_decoder.safetensors vae_encoder.safetensors
        (a checkpoint directory: --checkpoint-dir OUT works everywhere)
    loss.jsonl       one line per logged step: {"phase", "step", "loss", ...}
    train.json       settings, preset, wall time, final losses
    train_state.pt   everything needed to resume (models, optimisers, EMA, log); kept for resuming
Running the same command again on OUT resumes where the state left off (the per-step seeded
generators make a resumed run draw exactly what an uninterrupted run draws).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Callable

import torch

from md_export.models import Preset, build_component, load_component, save_component

from ..errors import BadArgumentError
from ..export.manifest import write_text_atomic
from ..tokenizer import Tokenizer
from .dataset import batch_indices, build_training_set
from .diffusion import caption_token_ids, diffusion_loss
from .schedule import EMA, learning_rate, set_learning_rate
from .settings import TrainSettings
from .state import load_state, save_state, step_generator
from .vae import encode_all, vae_loss

# (phase, step done, phase total, loss) -> None
Progress = Callable[[str, int, int, float], None]
LOG_EVERY = 10


class SettingsMismatchError(BadArgumentError):
    pass


# How a run executes, not what it trains: a run stopped with --threads 1 may resume with 2 (the
# per-step generators draw the same batches and noise; only float summation order may differ).
EXECUTION_SETTINGS = ("threads", "save_every")


def _trained(settings: dict) -> dict:
    # a state written before a setting existed trained with that setting's default
    with_defaults = {**TrainSettings().as_dict(), **settings}
    return {k: v for k, v in with_defaults.items() if k not in EXECUTION_SETTINGS}


def _check_resumable(state: dict, preset: Preset, settings: TrainSettings) -> None:
    if state["preset"] != preset.name or _trained(state["settings"]) != _trained(settings.as_dict()):
        raise SettingsMismatchError(
            "the output directory holds a run with other settings "
            f"({state['preset']}, {state['settings']}); use a new --out or the same flags to resume")


def _load_initial_weights(source: Path, modules: dict[str, torch.nn.Module]) -> None:
    # load_state_dict copies into the module's own fp32 tensors (the shipped files are fp16); a
    # missing file is a CheckpointError naming it
    for name, module in modules.items():
        load_component(module, source / f"{name}.safetensors")


def _write_log(out: Path, log: list[dict]) -> None:
    write_text_atomic(out / "loss.jsonl", "".join(json.dumps(line) + "\n" for line in log))


def train_micro(preset: Preset, out: str | Path, settings: TrainSettings, progress: Progress | None = None,
                stop_at: int | None = None) -> dict:
    """Train (or resume) to `settings.steps`; with `stop_at`, stop after that many diffusion steps and
    write the weights reached so far (the schedule stays the full run's: resuming later continues it)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(settings.threads)
    try:
        return _train(preset, Path(out), settings, progress, stop_at)
    finally:
        torch.set_num_threads(threads)


def _train(preset: Preset, out: Path, settings: TrainSettings, progress: Progress | None, stop_at: int | None) -> dict:
    progress = progress or (lambda phase, step, total, loss: None)
    started = time.perf_counter()

    encoder = build_component(preset, "vae_encoder", settings.seed).train()
    decoder = build_component(preset, "vae_decoder", settings.seed).train()
    text_encoder = build_component(preset, "text_encoder", settings.seed).train()
    unet = build_component(preset, "unet", settings.seed).train()
    if settings.init_from is not None:
        _load_initial_weights(Path(settings.init_from), {"vae_encoder": encoder, "vae_decoder": decoder,
                                                        "text_encoder": text_encoder, "unet": unet})
    out.mkdir(parents=True, exist_ok=True)  # after the starting weights loaded: bad input leaves no folder
    vae_opt = torch.optim.AdamW(list(encoder.parameters()) + list(decoder.parameters()),
                                lr=settings.vae_learning_rate, weight_decay=0.0)
    diff_opt = torch.optim.AdamW(list(text_encoder.parameters()) + list(unet.parameters()),
                                 lr=settings.learning_rate, weight_decay=0.0)
    ema = EMA({"text_encoder": text_encoder, "unet": unet}, settings.ema_decay)
    log: list[dict] = []
    vae_step = diff_step = 0
    elapsed_before = 0.0

    state = load_state(out)
    if state is not None:
        _check_resumable(state, preset, settings)
        for module, key in ((encoder, "vae_encoder"), (decoder, "vae_decoder"), (text_encoder, "text_encoder"),
                            (unet, "unet")):
            module.load_state_dict(state["modules"][key])
        vae_opt.load_state_dict(state["vae_opt"])
        diff_opt.load_state_dict(state["diff_opt"])
        ema.load_state_dict(state["ema"])
        log, vae_step, diff_step = state["log"], state["vae_step"], state["diff_step"]
        elapsed_before = state.get("seconds", 0.0)

    def checkpoint() -> None:
        save_state(out, {
            "preset": preset.name, "settings": settings.as_dict(), "vae_step": vae_step, "diff_step": diff_step,
            "modules": {"vae_encoder": encoder.state_dict(), "vae_decoder": decoder.state_dict(),
                        "text_encoder": text_encoder.state_dict(), "unet": unet.state_dict()},
            "vae_opt": vae_opt.state_dict(), "diff_opt": diff_opt.state_dict(), "ema": ema.state_dict(),
            "log": log, "seconds": elapsed_before + time.perf_counter() - started,
        })
        _write_log(out, log)

    target = settings.steps if stop_at is None else min(stop_at, settings.steps)
    data = build_training_set(settings)

    # ---- phase 1: autoencoder ----
    while vae_step < settings.vae_steps:
        generator = step_generator(settings.seed, 1, vae_step)
        set_learning_rate(vae_opt, learning_rate(settings.vae_learning_rate, vae_step, settings.vae_steps,
                                                 settings.warmup_steps))
        rows = batch_indices(data, settings, settings.vae_batch_size, generator)
        loss, parts = vae_loss(encoder, decoder, data.images[rows], generator)
        vae_opt.zero_grad(set_to_none=True)
        loss.backward()
        vae_opt.step()
        vae_step += 1
        if vae_step % LOG_EVERY == 0 or vae_step == settings.vae_steps:
            log.append({"phase": "vae", "step": vae_step, **{k: round(v, 6) for k, v in parts.items()}})
        progress("vae", vae_step, settings.vae_steps, parts["loss"])
        if vae_step % settings.save_every == 0 or vae_step == settings.vae_steps:
            checkpoint()

    # ---- phase 2: text encoder + UNet on the frozen encoder's latents ----
    encoder.eval()
    decoder.eval()
    latents = encode_all(encoder, data.images) if diff_step < target else None
    token_ids, empty_ids = caption_token_ids(data.captions, Tokenizer(preset.text_encoder.max_position_embeddings))
    while diff_step < target:
        generator = step_generator(settings.seed, 2, diff_step)
        set_learning_rate(diff_opt, learning_rate(settings.learning_rate, diff_step, settings.steps,
                                                  settings.warmup_steps))
        rows = batch_indices(data, settings, settings.batch_size, generator)
        loss = diffusion_loss(text_encoder, unet, latents[rows], token_ids[rows], empty_ids, settings.cfg_dropout,
                              generator, settings.input_perturbation, settings.high_noise_fraction)
        diff_opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(list(text_encoder.parameters()) + list(unet.parameters()), 1.0)
        diff_opt.step()
        ema.update({"text_encoder": text_encoder, "unet": unet}, diff_step)
        diff_step += 1
        if diff_step % LOG_EVERY == 0 or diff_step == settings.steps:
            log.append({"phase": "diffusion", "step": diff_step, "loss": round(loss.item(), 6)})
        progress("diffusion", diff_step, settings.steps, loss.item())
        if diff_step % settings.save_every == 0 or diff_step == settings.steps:
            checkpoint()

    checkpoint()
    final_text, final_unet = (build_component(preset, c, settings.seed) for c in ("text_encoder", "unet"))
    final_text.load_state_dict(ema.state_dict()["text_encoder"])
    final_unet.load_state_dict(ema.state_dict()["unet"])
    for name, module in (("vae_encoder", encoder), ("vae_decoder", decoder), ("text_encoder", final_text),
                         ("unet", final_unet)):
        save_component(module, out / f"{name}.safetensors", metadata={"preset": preset.name})
    seconds = elapsed_before + time.perf_counter() - started

    def last(phase: str) -> float | None:
        values = [line["loss"] for line in log if line["phase"] == phase]
        return values[-1] if values else None

    summary = {"preset": preset.name, "settings": settings.as_dict(), "images": len(data),
               "seconds": round(seconds, 1), "final_vae_loss": last("vae"), "final_diffusion_loss": last("diffusion"),
               "diffusion_steps_done": diff_step, "torch_threads": settings.threads}
    write_text_atomic(out / "train.json", json.dumps(summary, indent=2) + "\n")
    return summary
