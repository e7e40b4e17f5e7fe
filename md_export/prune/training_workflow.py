"""Light-decoder training and UFOGen fine-tuning of a preset, written as preset directories."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Callable

import torch

from md_export.models import Preset, get_preset
from md_export.models.preset_io import write_preset_files

from ..torch_networks import load_module
from .checkpointing import load_state, save_state
from .decoder_training import DecoderTrainSettings, Progress, train_decoder
from .errors import PruneError
from .photos import CAPTIONS, load_photos, random_crops
from .ufogen import UFOGenSettings, UFOGenTrainer, reconstruction_error
from .workflow import display_name, load_all

DECODER_LOG = "decoder_train_log.json"
UFOGEN_STATE = "ufogen_state.pt"
UFOGEN_LOG = "ufogen_log.jsonl"


def train_decoder_preset(preset: Preset, out: str | Path, settings: DecoderTrainSettings,
                         checkpoint_dir: str | Path | None = None, teacher: str | None = None, seed: int = 0,
                         progress: Progress | None = None) -> list[dict]:
    """Train `preset`'s decoder against its frozen encoder (distilling `teacher`'s decoder when
    given); write the preset with the trained decoder to `out` (resumable there)."""
    modules = load_all(preset, checkpoint_dir, seed)
    teacher_decoder = None
    if teacher is not None:
        teacher_preset = get_preset(teacher)
        if (teacher_preset.vae.encoder, teacher_preset.vae.scaling_factor) != (preset.vae.encoder,
                                                                              preset.vae.scaling_factor):
            raise PruneError(f"teacher {teacher} decodes another latent space (different VAE encoder)")
        teacher_decoder = load_module(teacher_preset, "vae_decoder", None, seed).module
    history = train_decoder(modules["vae_decoder"], modules["vae_encoder"], settings, out, teacher_decoder, progress)
    report = {"source_preset": preset.name, "teacher": teacher, "settings": dataclasses.asdict(settings),
              "history": history}
    write_preset_files(dataclasses.replace(preset, name=display_name(preset) + "-decoder-trained"), modules, out,
                       extra={"decoder_training": report}, files={DECODER_LOG: json.dumps(report, indent=2) + "\n"})
    return history


@torch.no_grad()
def photo_training_set(preset: Preset, modules: dict, count: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Real latents (photo crops through the frozen encoder) and the text embeddings of their captions."""
    from ..tokenizer import Tokenizer

    photos = load_photos()
    images, sources = random_crops(photos, preset.resolution, count, torch.Generator().manual_seed(seed))
    latents = modules["vae_encoder"](images)
    captions = [list(CAPTIONS.values())[i] for i in sources]
    ids = torch.from_numpy(Tokenizer(preset.text_encoder.max_position_embeddings)(captions))
    return latents, modules["text_encoder"](ids)


def ufogen_preset(preset: Preset, out: str | Path, settings: UFOGenSettings, checkpoint_dir: str | Path | None = None,
                  seed: int = 0, set_size: int = 8,
                  progress: Callable[[int, int, dict], None] | None = None) -> list[dict]:
    """UFOGen fine-tuning of `preset`'s UNet on photo latents with their captions; the generator
    is written to `out` as a preset directory (resumable from out/ufogen_state.pt)."""
    modules = load_all(preset, checkpoint_dir, seed)
    latents, text_emb = photo_training_set(preset, modules, set_size, seed)
    trainer = UFOGenTrainer(modules["unet"], settings)
    out = Path(out)
    state = load_state(out / UFOGEN_STATE)
    log: list[dict] = []
    if state is not None:
        trainer.load_state_dict(state["trainer"])
        log = state["log"]
    rng = torch.Generator()
    for step in range(len(log), settings.steps):
        rng.manual_seed(settings.seed * 7919 + step)
        rows = torch.randint(0, latents.shape[0], (settings.batch_size,), generator=rng)
        row = {"step": step + 1, **trainer.step(latents[rows], text_emb[rows])}
        log.append(row)
        if progress is not None:
            progress(step + 1, settings.steps, row)
    out.mkdir(parents=True, exist_ok=True)
    save_state({"trainer": trainer.state_dict(), "log": log}, out / UFOGEN_STATE)
    unet = trainer.generator.eval()
    report = {"source_preset": preset.name, "settings": dataclasses.asdict(settings), "log": log,
              "reconstruction_mse_on_set": reconstruction_error(unet, latents, text_emb, preset.unet.prediction_type)}
    write_preset_files(dataclasses.replace(preset, name=display_name(preset) + "-ufogen"), {**modules, "unet": unet},
                       out, extra={"ufogen": {k: v for k, v in report.items() if k != "log"}},
                       files={UFOGEN_LOG: "".join(json.dumps(r) + "\n" for r in log)})
    return log
