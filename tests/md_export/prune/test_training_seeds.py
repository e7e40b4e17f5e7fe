"""Distillation's training batches never draw the held-out evaluation or validation inputs."""

import torch

from md_export.prune.distill import DistillSettings, batch_for_step
from md_export.prune.inputs import EVAL_SEED, VALIDATION_SEED, random_unet_inputs, training_seed
from md_export.models import get_preset

HELD_OUT = {EVAL_SEED, VALIDATION_SEED}


def test_no_training_step_uses_a_held_out_seed():
    # the old seed * 1_000_003 + step hit EVAL_SEED at step 4242 and VALIDATION_SEED at 4343 (seed 0)
    for seed in (0, 1, 7, -1):
        seeds = [training_seed(seed, step) for step in range(20_000)]
        assert not HELD_OUT & set(seeds), f"seed {seed}"
        assert len(set(seeds)) == len(seeds)  # and no two steps share a batch
    assert training_seed(0, 5) == training_seed(0, 5)  # a resumed run redraws the same batch
    assert training_seed(0, 5) != training_seed(1, 5)


def test_the_batches_at_steps_4242_and_4343_are_not_the_held_out_sets():
    preset = get_preset("mobilediffusion-tiny")
    settings = DistillSettings(steps=1, batch_size=2, seed=0)
    for step, held_out_seed in ((4242, EVAL_SEED), (4343, VALIDATION_SEED)):
        held_out = random_unet_inputs(preset, 2, torch.Generator().manual_seed(held_out_seed))
        batch = batch_for_step(preset, settings, step, None)
        assert not torch.equal(batch[0], held_out[0])  # latents: a shared seed would make them equal
