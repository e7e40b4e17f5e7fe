"""Distillation reduces the pruned student's error to the teacher, keeps its best checkpoint, and
resumes exactly."""

import json

import pytest
import torch

from md_export.prune.distill import LOG_FILE, DistillSettings, distill
from md_export.prune.inputs import ranking_inputs
from md_export.prune.report import parity_to_teacher
from md_export.prune.workflow import VALIDATION_SEED, distill_preset, prune_preset
from md_export.torch_networks import load_module
from md_export.models import get_preset, load_preset_dir

TINY = "mobilediffusion-tiny"


def test_a_few_steps_reduce_the_error_to_the_teacher(tmp_path):
    prune_preset(get_preset(TINY), "channels", 0.4, tmp_path / "pruned")
    # 12 steps: +1.2 to +1.9 dB over batch seeds 0-3 (measured); 8 steps gave +0.9 to +1.4, too close to the bar
    settings = DistillSettings(steps=12, learning_rate=1e-3, checkpoint_every=4)
    report = distill_preset(TINY, tmp_path / "pruned", tmp_path / "distilled", settings)
    teacher_row, pruned_row, distilled_row = report["stages"]
    assert teacher_row["parity_psnr_db"] == 200.0 and teacher_row["params"] > pruned_row["params"]
    # a measurable drop: at least 1 dB closer to the teacher (about -20% MSE)
    assert distilled_row["parity_psnr_db"] > pruned_row["parity_psnr_db"] + 1.0
    assert distilled_row["parity_cosine"] > pruned_row["parity_cosine"]
    # final-image parity of every stage: the teacher's pipeline against itself is exact (200 dB cap)
    assert teacher_row["image_psnr_db"] == 200.0
    assert 0.0 < pruned_row["image_psnr_db"] < 200.0 and 0.0 < distilled_row["image_psnr_db"] < 200.0
    # validations at step 0 and every checkpoint; the kept one is the best of them
    trail = report["validation"]["output_psnr_db"]
    assert [e["step"] for e in trail] == [0, 4, 8, 12]
    assert report["best_step"] == max(trail, key=lambda e: e["psnr_db"])["step"]
    log = [json.loads(line) for line in (tmp_path / "distilled" / LOG_FILE).read_text().splitlines()]
    assert len(log) == 12 and log[-1]["loss"] < log[0]["loss"]
    # the distilled directory is itself a preset with the trained weights
    reloaded = load_module(load_preset_dir(tmp_path / "distilled"), "unet", None, 0).module
    student = load_module(load_preset_dir(tmp_path / "pruned"), "unet", None, 0).module
    assert not torch.equal(reloaded.conv_out.weight, student.conv_out.weight)


def test_resumed_run_matches_an_uninterrupted_one(tmp_path):
    preset = get_preset(TINY)
    prune_preset(preset, "blocks", 2, tmp_path / "pruned")
    student_preset = load_preset_dir(tmp_path / "pruned")
    teacher = load_module(preset, "unet", None, 0).module

    def student():
        return load_module(student_preset, "unet", None, 0).module

    full = distill(teacher, student(), student_preset, DistillSettings(steps=4, learning_rate=1e-3),
                   tmp_path / "a").log
    distill(teacher, student(), student_preset, DistillSettings(steps=2, learning_rate=1e-3, checkpoint_every=1),
            tmp_path / "b")
    resumed_student = student()
    resumed = distill(teacher, resumed_student, student_preset,
                      DistillSettings(steps=4, learning_rate=1e-3, checkpoint_every=1), tmp_path / "b").log
    assert [round(r["loss"], 5) for r in resumed] == [round(r["loss"], 5) for r in full]
    inputs = tuple(torch.randn(s) for s in [(1, 4, 8, 8)]) + (torch.tensor([10.0]), torch.randn(1, 77, 64))
    assert parity_to_teacher(teacher, resumed_student, inputs)["cosine"] < 1.0


def test_a_diverging_run_hands_back_its_best_checkpoint_not_its_last(tmp_path):
    # Two blocks removed: the student starts close to the teacher; lr 0.05 throws it far off, so
    # the last step is worse than where it started and the rule must return the step-0 weights.
    preset = get_preset(TINY)
    prune_preset(preset, "blocks", 2, tmp_path / "pruned")
    student_preset = load_preset_dir(tmp_path / "pruned")
    teacher = load_module(preset, "unet", None, 0).module
    student = load_module(student_preset, "unet", None, 0).module
    start_weights = {k: v.clone() for k, v in student.state_dict().items()}
    validation = ranking_inputs(student_preset, None, count=2, seed=VALIDATION_SEED)
    result = distill(teacher, student, student_preset,
                     DistillSettings(steps=4, learning_rate=5e-2, checkpoint_every=2), tmp_path / "d",
                     validation=validation)
    scores = {e["step"]: e["psnr_db"] for e in result.validations}
    assert list(scores) == [0, 2, 4] and scores[4] < scores[0] - 3.0  # the run really diverged
    assert result.best_step == max(scores, key=scores.get)
    assert parity_to_teacher(teacher, student, validation)["psnr_db"] == pytest.approx(scores[result.best_step],
                                                                                        abs=1e-3)
    if result.best_step == 0:
        assert all(torch.equal(v, start_weights[k]) for k, v in student.state_dict().items())
    # a resumed run that has nothing left to do keeps the same choice
    again = load_module(student_preset, "unet", None, 0).module
    resumed = distill(teacher, again, student_preset, DistillSettings(steps=4, learning_rate=5e-2, checkpoint_every=2),
                      tmp_path / "d", validation=validation)
    assert resumed.best_step == result.best_step
    assert all(torch.equal(a, b) for a, b in zip(again.state_dict().values(), student.state_dict().values()))


def test_calibration_rows_held_out_for_validation_and_evaluation_are_never_trained_on(tmp_path):
    from md_export.calibration.builders import CalibrationSettings, build_calibration
    from md_export.prune.errors import PruneError
    from md_export.prune.inputs import calibration_unet_inputs, distill_inputs

    preset = get_preset(TINY)
    build_calibration(preset, tmp_path / "calib", CalibrationSettings(num_prompts=2, steps=2, photos=1))
    everything = calibration_unet_inputs(tmp_path / "calib", preset)  # 2 prompts x 2 steps x (uncond, cond)
    split = distill_inputs(preset, tmp_path / "calib", count=2)
    assert [len(part[0]) for part in (split.train, split.validation, split.evaluation)] == [4, 2, 2]

    def rows(part):  # a guided step's two rows share latent and timestep, not the text embedding
        return {tuple(torch.cat([latent.flatten(), t.view(1), text.flatten()]).tolist())
                for latent, t, text in zip(*part)}

    assert len(rows(split.train) | rows(split.validation) | rows(split.evaluation)) == len(rows(everything)) == 8
    with pytest.raises(PruneError, match="needs more to train on"):
        distill_inputs(preset, tmp_path / "calib", count=4)
    prune_preset(preset, "channels", 0.3, tmp_path / "pruned", calibration=tmp_path / "calib")
    report = distill_preset(TINY, tmp_path / "pruned", tmp_path / "distilled", DistillSettings(steps=2),
                            calibration=tmp_path / "calib", image_prompts=0)
    assert report["held_out"].startswith("2 evaluation + 2 validation calibration rows")
    assert "image_psnr_db" not in report["stages"][1]  # image parity off
