"""Distillation recovery of a pruned UNet: teacher = the unpruned model, student = the pruned one.

Loss (BK-SDM): MSE between the outputs, plus MSE between the features at every stage boundary
(output of each down level, the bottleneck, output of each up level). Pruning here keeps every
stage's width (channels are pruned inside blocks, blocks are removed whole), so the features of
teacher and student always have the same shape and no projection layers are needed.

Batches: seeded random latents / timesteps / text embeddings, mixed with recorded calibration
rows when given; batch k depends only on (seed, k), so a resumed run sees the same data as an
uninterrupted one. Magnitude-pruned weights stay zero (their masks are re-applied every step).

Best checkpoint: with held-out validation inputs, the student's output PSNR to the teacher is
measured before the first step and at every checkpoint, and the student ends with the weights of
the best validation, not the last step's. A short run at too high a learning rate can push a
nearly exact student (a block or two removed) away from its teacher; this rule never hands back a
student worse on held-out inputs than the one distillation started from.
"""

from __future__ import annotations

import json
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from md_export.models import Preset
from md_export.models.unet import MobileUNet

from ..parity import psnr_db
from .checkpointing import load_state, save_state
from .errors import PruneError
from .inputs import random_unet_inputs, training_seed
from .magnitude import prunable_weights

Progress = Callable[[int, int, dict], None]
STATE_FILE = "distill_state.pt"
LOG_FILE = "distill_log.jsonl"


@dataclass(frozen=True)
class DistillSettings:
    steps: int
    batch_size: int = 2
    learning_rate: float = 1e-4
    feature_weight: float = 1.0  # BK-SDM weights output and feature terms equally
    seed: int = 0
    checkpoint_every: int = 25  # steps between resumable checkpoints
    calibration_share: float = 0.5  # fraction of each batch drawn from calibration rows, when given
    device: str | None = None  # None: CUDA when present, else CPU

    def __post_init__(self) -> None:
        if self.steps < 1:
            raise PruneError(f"distillation steps must be at least 1, got {self.steps}")
        if self.batch_size < 1 or self.learning_rate <= 0 or self.checkpoint_every < 1:
            raise PruneError("batch size, learning rate and checkpoint interval must be positive")


@dataclass
class DistillResult:
    log: list[dict]  # one row per step: loss, output and feature terms
    validations: list[dict] = field(default_factory=list)  # {"step", "psnr_db"}; step 0 = before training
    best_step: int | None = None  # the validation whose weights the student ends with (None: last step)

    @property
    def best_psnr_db(self) -> float | None:
        return next((e["psnr_db"] for e in self.validations if e["step"] == self.best_step), None)


def pick_device(requested: str | None) -> torch.device:
    if requested:
        return torch.device(requested)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


@contextmanager
def stage_features(unet: MobileUNet):
    """Collect the stage-boundary features of every forward pass into the yielded list."""
    features: list[torch.Tensor] = []

    def after(module, args, output):
        features.append(output[0])

    def before(module, args):
        features.append(args[0])  # what enters the first up level is the bottleneck's output

    handles = [level.register_forward_hook(after) for level in unet.down_blocks]
    handles.append(unet.up_blocks[0].register_forward_pre_hook(before))
    handles += [level.register_forward_hook(after) for level in unet.up_blocks]
    try:
        yield features
    finally:
        for handle in handles:
            handle.remove()


def distill_loss(teacher: MobileUNet, student: MobileUNet, inputs: tuple[torch.Tensor, ...],
                 feature_weight: float) -> dict[str, torch.Tensor]:
    with torch.no_grad(), stage_features(teacher) as teacher_features:
        target = teacher(*inputs)
    with stage_features(student) as student_features:
        output = student(*inputs)
    if len(student_features) != len(teacher_features):
        raise PruneError("teacher and student have different stage layouts (not the same UNet family)")
    output_loss = F.mse_loss(output, target)
    feature_loss = sum(F.mse_loss(s, t) for s, t in zip(student_features, teacher_features))
    return {"loss": output_loss + feature_weight * feature_loss, "output": output_loss, "feature": feature_loss}


def batch_for_step(preset: Preset, settings: DistillSettings, step: int,
                   calibration: tuple[torch.Tensor, ...] | None) -> tuple[torch.Tensor, ...]:
    generator = torch.Generator().manual_seed(training_seed(settings.seed, step))  # never a held-out seed
    batch = random_unet_inputs(preset, settings.batch_size, generator)
    if calibration is None:
        return batch
    taken = min(settings.batch_size, max(1, round(settings.batch_size * settings.calibration_share)))
    rows = torch.randint(0, calibration[0].shape[0], (taken,), generator=generator)
    return tuple(torch.cat([c.index_select(0, rows), r[taken:]]) if taken < settings.batch_size
                 else c.index_select(0, rows) for c, r in zip(calibration, batch))


def _write_log(log: list[dict], path: Path) -> None:
    from ..export.manifest import write_text_atomic

    write_text_atomic(path, "".join(json.dumps(row) + "\n" for row in log))


def sparsity_masks(module: nn.Module) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(weight, keep-mask) of every conv/linear weight that has zeros from magnitude pruning."""
    masks = []
    for weight in prunable_weights(module):
        zeros = int((weight == 0).sum())
        if zeros > 0.01 * weight.numel():
            masks.append((weight, weight != 0))
    return masks


class _Validator:
    """Output PSNR of the student to the teacher on fixed held-out inputs (teacher outputs computed once)."""

    def __init__(self, teacher: MobileUNet, inputs: tuple[torch.Tensor, ...], device: torch.device):
        self.inputs = tuple(t.to(device) for t in inputs)
        with torch.no_grad():
            self.target = teacher(*self.inputs).double().cpu().numpy()

    @torch.no_grad()
    def __call__(self, student: MobileUNet) -> float:
        was_training = student.training
        output = student.eval()(*self.inputs).double().cpu().numpy()
        student.train(was_training)
        return round(psnr_db(self.target, output), 3)


def distill(teacher: MobileUNet, student: MobileUNet, preset: Preset, settings: DistillSettings, work_dir: str | Path,
            calibration: tuple[torch.Tensor, ...] | None = None, progress: Progress | None = None,
            validation: tuple[torch.Tensor, ...] | None = None) -> DistillResult:
    """Train `student` in place toward `teacher`.

    `work_dir` holds distill_state.pt (student + optimizer + log + best weights, every
    `checkpoint_every` steps) and distill_log.jsonl; a run that finds a state there resumes from it.
    With `validation` inputs the student ends with its best validated weights (see the module doc).
    """
    work_dir = Path(work_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    device = pick_device(settings.device)
    teacher = teacher.to(device).eval().requires_grad_(False)
    student = student.to(device).train()
    optimizer = torch.optim.AdamW(student.parameters(), lr=settings.learning_rate, weight_decay=0.0)
    state_path, log_path = work_dir / STATE_FILE, work_dir / LOG_FILE
    validate = _Validator(teacher, validation, device) if validation is not None else None
    result = DistillResult(log=[])
    best_weights: dict[str, torch.Tensor] | None = None
    start = 0
    state = load_state(state_path, device)
    if state is not None:
        if state["student_config"] != asdict(student.config):
            raise PruneError(f"{state_path} belongs to another student model; remove it to start over")
        student.load_state_dict(state["student"])
        optimizer.load_state_dict(state["optimizer"])
        start, result.log = state["step"], state["log"]
        result.validations, result.best_step = state.get("validations", []), state.get("best_step")
        best_weights = state.get("best_student")
    masks = sparsity_masks(student)

    def snapshot() -> dict[str, torch.Tensor]:
        return {k: v.detach().to("cpu", copy=True) for k, v in student.state_dict().items()}

    def validate_at(step: int) -> None:
        nonlocal best_weights
        if validate is None:
            return
        score = validate(student)
        result.validations.append({"step": step, "psnr_db": score})
        if result.best_step is None or score > result.best_psnr_db:
            result.best_step, best_weights = step, snapshot()

    def checkpoint(step: int) -> None:
        save_state({"step": step, "student": student.state_dict(), "optimizer": optimizer.state_dict(),
                    "log": result.log, "validations": result.validations, "best_step": result.best_step,
                    "best_student": best_weights, "student_config": asdict(student.config),
                    "settings": asdict(settings)}, state_path)
        _write_log(result.log, log_path)

    if start == 0:
        validate_at(0)
    for step in range(start, settings.steps):
        inputs = tuple(t.to(device) for t in batch_for_step(preset, settings, step, calibration))
        losses = distill_loss(teacher, student, inputs, settings.feature_weight)
        optimizer.zero_grad(set_to_none=True)
        losses["loss"].backward()
        optimizer.step()
        with torch.no_grad():
            for weight, mask in masks:
                weight.mul_(mask)
        row = {"step": step + 1, **{k: float(v.detach()) for k, v in losses.items()}}
        result.log.append(row)
        if progress is not None:
            progress(step + 1, settings.steps, row)
        if (step + 1) % settings.checkpoint_every == 0 or step + 1 == settings.steps:
            validate_at(step + 1)
            checkpoint(step + 1)
    if best_weights is not None:
        student.load_state_dict(best_weights)
    student.eval().cpu()
    teacher.cpu()
    return result
