import json

import numpy as np
import pytest
from safetensors.torch import load_file

from md_export.models import CheckpointError, get_preset
from md_export.errors import BadArgumentError
from md_export.train import TrainSettings, train_micro

TINY = "mobilediffusion-micro-tiny"  # the micro preset's twin: same code path, seconds per run


def _settings(**changes) -> TrainSettings:
    # save_every past the run: the resumable state holds AdamW moments of the 49408-row token table
    base = dict(data="shapes", steps=12, vae_steps=12, batch_size=8, vae_batch_size=8, shapes_count=32,
                warmup_steps=2, save_every=100, threads=1, learning_rate=2e-3, vae_learning_rate=4e-3)
    base.update(changes)
    return TrainSettings(**base)


def _run(out, settings, stop_at=None):
    losses = {"vae": [], "diffusion": []}

    def progress(phase, step, total, loss):
        losses[phase].append(loss)

    summary = train_micro(get_preset(TINY), out, settings, progress, stop_at=stop_at)
    return summary, losses


def test_a_few_iterations_reduce_both_losses_and_write_a_checkpoint_dir(tmp_path):
    summary, losses = _run(tmp_path, _settings())
    for phase in ("vae", "diffusion"):
        assert np.mean(losses[phase][-4:]) < np.mean(losses[phase][:4]), (phase, losses[phase])
    for name in ("text_encoder", "unet", "vae_decoder", "vae_encoder"):
        assert load_file(str(tmp_path / f"{name}.safetensors"))
    log = [json.loads(line) for line in (tmp_path / "loss.jsonl").read_text().splitlines()]
    assert {line["phase"] for line in log} == {"vae", "diffusion"}
    assert summary["final_diffusion_loss"] == log[-1]["loss"]


def test_training_is_deterministic_and_resumes_to_the_same_weights(tmp_path):
    settings = _settings(steps=6, vae_steps=4, save_every=3)
    _run(tmp_path / "a", settings)
    stopped, _ = _run(tmp_path / "b", settings, stop_at=3)
    assert stopped["diffusion_steps_done"] == 3
    _, resumed = _run(tmp_path / "b", settings)
    assert resumed["vae"] == [] and len(resumed["diffusion"]) == 3
    for name in ("unet", "text_encoder", "vae_decoder"):
        a, b = load_file(str(tmp_path / "a" / f"{name}.safetensors")), load_file(str(tmp_path / "b" / f"{name}.safetensors"))
        assert all(a[k].equal(b[k]) for k in a), name


def test_resuming_with_other_settings_and_bad_settings_are_clear_errors(tmp_path):
    _run(tmp_path, _settings(steps=1, vae_steps=1, save_every=1))
    with pytest.raises(BadArgumentError, match="other settings"):
        _run(tmp_path, _settings(steps=2, vae_steps=1, save_every=1))
    # how it runs is not what it trains: other threads or checkpoint spacing resume the same run
    summary, _ = _run(tmp_path, _settings(steps=1, vae_steps=1, save_every=2, threads=2))
    assert summary["diffusion_steps_done"] == 1
    with pytest.raises(BadArgumentError, match="--data"):
        TrainSettings(data="cats")


def test_init_from_starts_at_a_checkpoint_and_a_missing_component_is_named(tmp_path):
    _run(tmp_path / "a", _settings(steps=4, vae_steps=4))
    # no steps at all: the written weights are the starting checkpoint's, bit for bit
    _run(tmp_path / "b", _settings(steps=0, vae_steps=0, init_from=str(tmp_path / "a")))
    for name in ("unet", "text_encoder", "vae_decoder", "vae_encoder"):
        a, b = load_file(str(tmp_path / "a" / f"{name}.safetensors")), load_file(str(tmp_path / "b" / f"{name}.safetensors"))
        assert all(a[k].equal(b[k]) for k in a), name
    # continuing trains the UNet and keeps the autoencoder (vae_steps=0)
    _run(tmp_path / "c", _settings(steps=3, vae_steps=0, init_from=str(tmp_path / "a")))
    a, c = load_file(str(tmp_path / "a" / "unet.safetensors")), load_file(str(tmp_path / "c" / "unet.safetensors"))
    assert not all(a[k].equal(c[k]) for k in a)
    a, c = (load_file(str(tmp_path / d / "vae_decoder.safetensors")) for d in ("a", "c"))
    assert all(a[k].equal(c[k]) for k in a)
    (tmp_path / "a" / "unet.safetensors").unlink()
    with pytest.raises(CheckpointError, match="unet.safetensors"):
        _run(tmp_path / "d", _settings(steps=1, vae_steps=0, init_from=str(tmp_path / "a")))
    assert not (tmp_path / "d").exists()  # bad input leaves no output folder behind


def test_input_perturbation_changes_the_input_only_and_old_states_resume(tmp_path):
    import torch

    from md_export.train.diffusion import diffusion_loss

    preset = get_preset(TINY)
    from md_export.models import build_component

    text, unet = build_component(preset, "text_encoder", 0), build_component(preset, "unet", 0)
    latents = torch.randn(2, preset.unet.in_channels, 8, 8, generator=torch.Generator().manual_seed(0))
    ids = torch.zeros(2, preset.text_encoder.max_position_embeddings, dtype=torch.long)
    plain, plain_again, perturbed = (
        diffusion_loss(text, unet, latents, ids, ids[0], 0.0, torch.Generator().manual_seed(1), gamma).item()
        for gamma in (0.0, 0.0, 0.1))
    assert plain == plain_again and perturbed != plain
    # a resumable state written before the setting existed resumes as gamma = 0
    settings = _settings(steps=1, vae_steps=1, save_every=1)
    _run(tmp_path, settings)
    from md_export.train.state import load_state, save_state

    state = load_state(tmp_path)
    del state["settings"]["input_perturbation"]
    save_state(tmp_path, state)
    summary, _ = _run(tmp_path, settings)
    assert summary["diffusion_steps_done"] == 1
    with pytest.raises(BadArgumentError, match="input_perturbation"):
        TrainSettings(input_perturbation=1.5)


def test_high_noise_fraction_moves_that_share_of_timesteps_to_the_noisiest_40_percent():
    import torch

    from md_export.samplers import TRAIN_TIMESTEPS
    from md_export.train.diffusion import HIGH_NOISE_FROM, draw_timesteps

    uniform = draw_timesteps(4000, torch.Generator().manual_seed(3))
    assert uniform.equal(torch.randint(0, TRAIN_TIMESTEPS, (4000,), generator=torch.Generator().manual_seed(3)))
    assert draw_timesteps(4000, torch.Generator().manual_seed(3), 0.0).equal(uniform)
    assert int(draw_timesteps(4000, torch.Generator().manual_seed(3), 1.0).min()) >= HIGH_NOISE_FROM == 600
    # fraction 0.5: P(t >= 600) = 0.5 + 0.5 * 0.4 = 0.7; 4000 draws: standard error 0.007
    high_share = (draw_timesteps(4000, torch.Generator().manual_seed(3), 0.5) >= HIGH_NOISE_FROM).float().mean()
    assert 0.67 < float(high_share) < 0.73
    for bad in (dict(high_noise_fraction=1.5), dict(shape_weights={"cube": 2.0}), dict(shape_weights={"square": -1.0})):
        with pytest.raises(BadArgumentError):
            TrainSettings(**bad)


def test_cli_shape_weight_flag_parses_and_names_a_bad_value():
    from md_export.cli_train import _shape_weights

    assert _shape_weights(["square=2", "triangle=1.5"]) == {"square": 2.0, "triangle": 1.5}
    with pytest.raises(BadArgumentError, match="SHAPE=W"):
        _shape_weights(["square"])
