import json

import numpy as np
import pytest
from safetensors.numpy import load_file

from md_export.calibration.builders import (CALIBRATION_SEED_OFFSET, CalibrationError, CalibrationSettings,
                                           build_calibration, calibration_feeds, load_prompts, noise_seed,
                                           photo_latents_match)
from md_export.models import get_preset


def test_prompt_set_is_large_varied_and_fixed():
    prompts = load_prompts()
    assert len(prompts) >= 200 and len(set(prompts)) == len(prompts)
    for subject in ("fox", "woman", "teapot", "lighthouse"):  # animals, people, objects, scenes
        assert any(subject in p for p in prompts)


@pytest.fixture(scope="module")
def calibration_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("calib") / "c"
    build_calibration(get_preset("mobilediffusion-tiny"), out, CalibrationSettings(num_prompts=3, steps=2, seed=5))
    return out


def test_shards_hold_real_sampler_inputs(calibration_dir):
    manifest = json.loads((calibration_dir / "calibration.json").read_text())
    unet = load_file(str(calibration_dir / "unet.safetensors"))
    # 3 prompts x 2 steps x (uncond + cond) rows, batch 1 each, at every DDIM timestep
    assert unet["latent"].shape == (12, 4, 8, 8) and unet["text_emb"].shape == (12, 77, 64)
    assert sorted(set(unet["timestep"].tolist())) == [1.0, 501.0]
    assert load_file(str(calibration_dir / "text_encoder.safetensors"))["input_ids"].shape == (4, 77)  # + ""
    # final latents of the 3 runs; a random-weight VAE encoder does not map into the UNet's latent
    # space, so the photos are left out of the decoder's set (not even encoded), and said so
    assert load_file(str(calibration_dir / "vae_decoder.safetensors"))["latent"].shape == (3, 4, 8, 8)
    assert manifest["samples"] == {"text_encoder": 4, "unet": 12, "vae_decoder": 3}
    note = manifest["photo_latents"]
    assert not note["used_for_vae_decoder"] and "left out" in note["reason"] and "random weights" in note["reason"]
    assert "sampler_over_photo_std" not in note


def test_calibration_noise_never_is_a_small_seeds_noise(calibration_dir):
    # the first UNet row of run 0 is its initial noise: drawn from the calibration's own seed stream,
    # not from seed 5, the noise a picture drawn with --seed 5 starts from (README command 1 once
    # calibrated on its own gate picture's trajectory this way)
    manifest = json.loads((calibration_dir / "calibration.json").read_text())
    assert manifest["noise_seeds"] == [CALIBRATION_SEED_OFFSET + 5 + i for i in range(3)]
    first_row = load_file(str(calibration_dir / "unet.safetensors"))["latent"][0]
    assert np.array_equal(first_row, np.random.default_rng(noise_seed(5, 0)).standard_normal((4, 8, 8), dtype=np.float32))
    assert not np.allclose(first_row, np.random.default_rng(5).standard_normal((4, 8, 8), dtype=np.float32))


def test_the_decoder_calibrates_on_runs_of_the_pipelines_steps(tmp_path):
    from md_export.pipeline import TextToImagePipeline
    from md_export.torch_networks import torch_networks

    preset = get_preset("mobilediffusion-tiny")
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a red circle\na blue square\na green triangle\nthe gate's prompt\n")
    out = tmp_path / "c"
    build_calibration(preset, out, CalibrationSettings(num_prompts=2, steps=1, seed=3, photos=1, decoder_steps=3,
                                                       prompts_file=str(prompts),
                                                       held_out_prompts=("the gate's prompt",)))
    manifest = json.loads((out / "calibration.json").read_text())
    # the UNet's rows: 2 prompts x 1 step x (uncond + cond); the decoder's run records none
    assert manifest["samples"] == {"text_encoder": 2 + 1 + 1, "unet": 4, "vae_decoder": 1}
    assert manifest["decoder_steps"] == 3 and manifest["held_out_prompts"] == 1
    [decoder_prompt] = manifest["decoder_prompts"]
    assert decoder_prompt not in manifest["prompts"]
    assert "the gate's prompt" not in manifest["prompts"] + manifest["decoder_prompts"]
    # the decoder's latent is the final latent of a 3-step run from that prompt and the next noise seed
    networks, _ = torch_networks(preset)
    expected, _ = TextToImagePipeline(networks, preset.unet.prediction_type).sample_latent(
        decoder_prompt, 3, noise_seed(3, 2), 7.5)
    latent = load_file(str(out / "vae_decoder.safetensors"))["latent"]
    np.testing.assert_allclose(latent, expected, rtol=0, atol=1e-5)  # same torch calls; 1e-5 for thread order
    with pytest.raises(CalibrationError, match="3 calibration prompts wanted .* without the 2 held out"):
        build_calibration(preset, tmp_path / "x", CalibrationSettings(
            num_prompts=2, steps=1, decoder_steps=2, prompts_file=str(prompts),
            held_out_prompts=("the gate's prompt", "a red circle")))
    assert not (tmp_path / "x").exists()


def test_photo_latents_off_the_sampler_distribution_are_left_out():
    # what the random-weight encoder gave on mobilediffusion-tiny: latents 100x narrower than the sampler's
    rng = np.random.default_rng(0)
    sampler, narrow = rng.standard_normal((3, 4, 8, 8)), 0.01 * rng.standard_normal((6, 4, 8, 8))
    used, note = photo_latents_match(sampler, narrow)
    assert not used and note["sampler_over_photo_std"] > 10 and "left out" in note["reason"]
    used, note = photo_latents_match(sampler, 0.6 * rng.standard_normal((6, 4, 8, 8)))  # trained micro: 1.5-1.8
    assert used and "reason" not in note


def test_photos_calibrate_the_decoder_when_the_encoder_matches_the_latent_space(tmp_path):
    # the shipped trained micro weights: photo latents within 2x of the sampler's (measured 1.5-1.8)
    build_calibration(get_preset("mobilediffusion-micro"), tmp_path / "c",
                      CalibrationSettings(num_prompts=1, steps=1, photos=2))
    manifest = json.loads((tmp_path / "c" / "calibration.json").read_text())
    assert manifest["photo_latents"]["used_for_vae_decoder"]
    assert 0.5 < manifest["photo_latents"]["sampler_over_photo_std"] < 3
    assert manifest["samples"]["vae_decoder"] == 1 + 2


def test_same_seed_same_data(calibration_dir, tmp_path):
    again = tmp_path / "again"
    build_calibration(get_preset("mobilediffusion-tiny"), again, CalibrationSettings(num_prompts=3, steps=2, seed=5))
    for name in ("unet", "vae_decoder", "text_encoder"):
        a, b = load_file(str(calibration_dir / f"{name}.safetensors")), load_file(str(again / f"{name}.safetensors"))
        assert all(np.array_equal(a[k], b[k]) for k in a)


def test_networks_that_already_drew_a_picture_give_the_same_data(calibration_dir, tmp_path):
    # the main job's torch reference draws its picture, then calibrates with the same networks
    from md_export.pipeline import TextToImagePipeline
    from md_export.torch_networks import torch_networks

    preset = get_preset("mobilediffusion-tiny")
    networks, sources = torch_networks(preset)
    TextToImagePipeline(networks, preset.unet.prediction_type).generate("a photo of an astronaut", 2, 0)
    shared = tmp_path / "shared"
    build_calibration(preset, shared, CalibrationSettings(num_prompts=3, steps=2, seed=5), networks=(networks, sources))
    for name in ("unet", "vae_decoder", "text_encoder"):
        a, b = load_file(str(calibration_dir / f"{name}.safetensors")), load_file(str(shared / f"{name}.safetensors"))
        assert all(np.array_equal(a[k], b[k]) for k in a)
    assert networks.unet.run.__name__ != "recording_run"  # the UNet's own run is back after the sampling


def test_feeds_check_shapes_against_the_artifact(calibration_dir):
    feeds = calibration_feeds(calibration_dir, "unet", {"latent": [1, 4, 8, 8], "timestep": [1], "text_emb": [1, 77, 64]})
    assert len(feeds) == 12 and feeds[0]["latent"].shape == (1, 4, 8, 8)
    with pytest.raises(CalibrationError, match="another resolution"):
        calibration_feeds(calibration_dir, "unet", {"latent": [1, 4, 12, 12], "timestep": [1], "text_emb": [1, 77, 64]})


def test_a_users_prompts_file_replaces_the_shipped_set(tmp_path):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("# my app's prompts\na red circle\n\na blue square on the left\n")
    out = tmp_path / "c"
    build_calibration(get_preset("mobilediffusion-tiny"), out,
                      CalibrationSettings(num_prompts=2, steps=1, photos=1, prompts_file=str(prompts)))
    manifest = json.loads((out / "calibration.json").read_text())
    assert sorted(manifest["prompts"]) == ["a blue square on the left", "a red circle"]
    assert manifest["prompts_file"] == str(prompts) and manifest["samples"]["unet"] == 4
    (tmp_path / "empty.txt").write_text("# nothing\n")
    for bad, message in ((tmp_path / "empty.txt", "holds no prompt"), (tmp_path / "nope.txt", "cannot read")):
        with pytest.raises(CalibrationError, match=message):
            build_calibration(get_preset("mobilediffusion-tiny"), tmp_path / "x",
                              CalibrationSettings(num_prompts=1, prompts_file=str(bad)))
        assert not (tmp_path / "x").exists()


def test_bad_requests_are_clear(tmp_path):
    with pytest.raises(CalibrationError, match="prompts in the set"):
        build_calibration(get_preset("mobilediffusion-tiny"), tmp_path / "x", CalibrationSettings(num_prompts=10_000))
    with pytest.raises(CalibrationError, match="not a calibration directory"):
        calibration_feeds(tmp_path, "unet", {})


def test_an_existing_folder_is_never_deleted_and_a_file_is_refused_before_any_work(tmp_path, monkeypatch):
    from md_export.errors import OutputError

    def no_sampling(*args, **kwargs):
        raise AssertionError("sampled before checking the output")

    monkeypatch.setattr("md_export.torch_networks.torch_networks", no_sampling)
    folder = tmp_path / "D"
    (folder / "sub").mkdir(parents=True)
    (folder / "keep.txt").write_text("x\n")
    (tmp_path / "file").write_text("mine\n")
    with pytest.raises(OutputError, match=f"{folder} is not empty; pass --overwrite"):
        build_calibration(get_preset("mobilediffusion-tiny"), folder, CalibrationSettings(num_prompts=1, steps=1))
    with pytest.raises(OutputError, match="exists and is not a directory"):
        build_calibration(get_preset("mobilediffusion-tiny"), tmp_path / "file", CalibrationSettings(num_prompts=1))
    assert (folder / "keep.txt").read_text() == "x\n" and (folder / "sub").is_dir()
    assert (tmp_path / "file").read_text() == "mine\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["D", "file"]


def test_overwrite_replaces_only_after_success(tmp_path, monkeypatch):
    folder = tmp_path / "D"
    folder.mkdir()
    (folder / "keep.txt").write_text("x\n")
    settings = CalibrationSettings(num_prompts=1, steps=1, photos=1)

    def broken_photos(*args, **kwargs):  # fails after the sampling, before anything is written
        raise RuntimeError("photos unavailable")

    trained = get_preset("mobilediffusion-micro")  # its trained encoder encodes the photos; a random one would not
    with monkeypatch.context() as patch:
        patch.setattr("md_export.calibration.builders.photo_batch", broken_photos)
        with pytest.raises(RuntimeError, match="photos unavailable"):
            build_calibration(trained, folder, settings, overwrite=True)
    assert [p.name for p in folder.iterdir()] == ["keep.txt"]  # the failed run kept the old folder
    assert [p.name for p in tmp_path.iterdir()] == ["D"]  # and left no staging sibling

    build_calibration(trained, folder, settings, overwrite=True)
    assert not (folder / "keep.txt").exists() and (folder / "calibration.json").is_file()
    assert [p.name for p in tmp_path.iterdir()] == ["D"]  # the set-aside old folder is gone too


def test_resolution_must_be_a_positive_multiple(tmp_path):
    for resolution in (0, -64, 60):
        with pytest.raises(CalibrationError, match="positive multiple of 32"):
            build_calibration(get_preset("mobilediffusion-tiny"), tmp_path / "x",
                              CalibrationSettings(num_prompts=1, steps=1, resolution=resolution))
    assert not (tmp_path / "x").exists()
