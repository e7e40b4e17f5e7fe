"""Prune a preset into a model directory; distill a pruned directory back toward its teacher.

Both write a preset directory (preset.json + every component's safetensors) that `md-export
export --preset DIR`, `quantize` and `parity` take like any named preset, plus a JSON report.
"""

from __future__ import annotations

import copy
import dataclasses
import json
from dataclasses import asdict
from pathlib import Path

from md_export.models import COMPONENTS, Preset, component_example_inputs, get_preset, load_preset_dir, save_preset_dir
from md_export.models.preset_io import is_preset_dir, write_preset_files

from ..torch_networks import load_module
from .blocks import remove_blocks
from .channels import channel_prune
from .distill import DistillSettings, Progress, distill
from .errors import PruneError
from .heads import head_prune
from .inputs import EVAL_SEED, VALIDATION_SEED, distill_inputs, ranking_inputs
from .magnitude import magnitude_prune
from .report import ImageProbe, markdown_table, parity_to_teacher, stage_row

METHODS = ("magnitude", "channels", "heads", "blocks")
PRUNE_REPORT = "prune_report.json"
DISTILL_REPORT = "distill_report.json"


def display_name(preset: Preset) -> str:
    return Path(preset.name).name if is_preset_dir(preset.name) else preset.name


def load_all(preset: Preset, checkpoint_dir: str | Path | None, seed: int) -> dict:
    return {c: load_module(preset, c, checkpoint_dir, seed).module for c in COMPONENTS}


def prune_preset(preset: Preset, method: str, amount: float, out: str | Path, checkpoint_dir: str | Path | None = None,
                 seed: int = 0, calibration: str | Path | None = None) -> dict:
    """Prune the UNet of `preset`; write the model directory `out`; return the report."""
    if method not in METHODS:
        raise PruneError(f"unknown pruning method {method!r}; known: {', '.join(METHODS)}")
    if method == "blocks" and (amount != int(amount) or amount < 1):
        raise PruneError(f"--amount for blocks is how many blocks to remove (an integer >= 1), got {amount}")
    modules = load_all(preset, checkpoint_dir, seed)
    unet = modules["unet"]
    ranking = ranking_inputs(preset, calibration, count=4, seed=seed)
    if method == "magnitude":
        pruned = copy.deepcopy(unet)
        result = magnitude_prune(pruned, amount)
    elif method == "channels":
        pruned, result = channel_prune(unet, amount)
    elif method == "heads":
        pruned, result = head_prune(unet, amount)
    else:
        pruned, result = remove_blocks(unet, int(amount), ranking)
    name = f"{display_name(preset)}-{method}-{amount:g}"
    pruned_preset = dataclasses.replace(preset, name=name, unet=pruned.config,
                                        description=f"{preset.description}; {method} pruning {amount:g}")
    evaluation = distill_inputs(preset, calibration).evaluation
    report = {
        "method": method, "amount": amount, "source_preset": preset.name,
        "source_checkpoint_dir": str(checkpoint_dir) if checkpoint_dir else None,
        "ranking_inputs": f"calibration {calibration}" if calibration else f"seeded random (seed {seed})",
        "result": asdict(result),
        "unet_params_before": sum(p.numel() for p in unet.parameters()),
        "unet_params_after": sum(p.numel() for p in pruned.parameters()),
        "parity_to_teacher": parity_to_teacher(unet, pruned, evaluation),
    }
    if method == "magnitude":
        report["note"] = ("unstructured sparsity: same shapes, so dense runtimes (onnxruntime, LiteRT, Core ML) "
                          "do the same work; it shrinks compressed size only")
    save_preset_dir(pruned_preset, {**modules, "unet": pruned}, out, extra={"pruning": report},
                    files={PRUNE_REPORT: json.dumps(report, indent=2) + "\n"})
    return report


def distill_preset(teacher_ref: str, student_dir: str | Path, out: str | Path, settings: DistillSettings,
                   teacher_checkpoint: str | Path | None = None, seed: int = 0, calibration: str | Path | None = None,
                   progress: Progress | None = None, image_prompts: int = 1, image_steps: int = 4) -> dict:
    """Distill the pruned model in `student_dir` toward the teacher's UNet; the distilled model and
    its state / log / report go to `out` (a rerun with the same `out` resumes).

    Each stage (teacher, pruned, distilled) is scored by UNet output parity on held-out inputs and,
    unless `image_prompts` is 0, by final image PSNR of a DDIM pipeline of `image_steps` steps.
    """
    teacher_preset = get_preset(teacher_ref)
    student_preset = load_preset_dir(student_dir)
    if (teacher_preset.latent_shape() != student_preset.latent_shape()
            or teacher_preset.text_encoder != student_preset.text_encoder):
        raise PruneError(f"student {student_dir} and teacher {teacher_ref} take different inputs "
                         "(latent shape / text encoder): not a pruned version of this teacher")
    teacher = load_module(teacher_preset, "unet", teacher_checkpoint, seed).module
    modules = load_all(student_preset, None, 0)
    student = modules["unet"]
    inputs = distill_inputs(student_preset, calibration)
    evaluation = inputs.evaluation
    timing = component_example_inputs(student_preset, "unet")
    probe = (ImageProbe(student_preset, modules["text_encoder"], modules["vae_decoder"], teacher,
                        prompts=image_prompts, steps=image_steps, seed=EVAL_SEED)
             if image_prompts > 0 else None)
    rows = [stage_row("teacher (before pruning)", teacher_preset, teacher, teacher, evaluation, timing, probe),
            stage_row("pruned", student_preset, student, teacher, evaluation, timing, probe)]
    result = distill(teacher, student, student_preset, settings, out, inputs.train, progress, inputs.validation)
    kept = f"best of {len(result.validations)} validations: step {result.best_step}"
    rows.append(stage_row(f"distilled ({len(result.log)} steps; {kept})", student_preset, student, teacher,
                          evaluation, timing, probe))
    report = {"teacher": teacher_ref, "student": str(student_dir), "settings": asdict(settings),
              "device": str(settings.device or "auto"), "stages": rows,
              "held_out": (f"{len(evaluation[0])} evaluation + {len(inputs.validation[0])} validation "
                           f"calibration rows, never trained on" if calibration else
                           f"seeded noise (evaluation seed {EVAL_SEED}, validation seed {VALIDATION_SEED})"),
              "validation": {"output_psnr_db": result.validations}, "best_step": result.best_step,
              "image_parity": {"prompts": image_prompts, "ddim_steps": image_steps, "seed": EVAL_SEED},
              "first_loss": result.log[0] if result.log else None, "last_loss": result.log[-1] if result.log else None}
    name = display_name(student_preset) + "-distilled"
    write_preset_files(dataclasses.replace(student_preset, name=name), modules, out, extra={"distillation": report},
                       files={DISTILL_REPORT: json.dumps(report, indent=2) + "\n",
                              "distill_report.md": markdown_table(rows)})
    return report
