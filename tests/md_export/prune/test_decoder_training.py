"""Light-decoder training on real photos: PSNR per epoch goes up, and a run resumes where it stopped."""

import torch

from md_export.prune.decoder_training import DecoderTrainSettings, train_decoder
from md_export.prune.photos import center_crops, load_photos, random_crops
from md_export.models import build_component, get_preset

TINY = get_preset("mobilediffusion-tiny")
SETTINGS = DecoderTrainSettings(epochs=2, steps_per_epoch=8, batch_size=2, resolution=32, learning_rate=1e-3)


def test_photo_crops_are_augmented_images_in_range():
    photos = load_photos()
    crops, sources = random_crops(photos, 32, 6, torch.Generator().manual_seed(0))
    assert crops.shape == (6, 3, 32, 32) and crops.min() >= -1 and crops.max() <= 1
    assert len(set(sources)) > 1
    again, _ = random_crops(photos, 32, 6, torch.Generator().manual_seed(0))
    assert torch.equal(crops, again)
    assert center_crops(photos, 32).shape == (len(photos), 3, 32, 32)


def test_training_raises_reconstruction_psnr_and_resumes(tmp_path):
    decoder, encoder = build_component(TINY, "vae_decoder"), build_component(TINY, "vae_encoder")
    encoder_before = {k: v.clone() for k, v in encoder.state_dict().items()}
    history = train_decoder(decoder, encoder, SETTINGS, tmp_path)
    assert [row["epoch"] for row in history] == [0, 1, 2]
    assert history[-1]["psnr_db"] > history[0]["psnr_db"] + 1.0, history
    assert all(torch.equal(v, encoder.state_dict()[k]) for k, v in encoder_before.items()), "encoder stays frozen"

    more = train_decoder(build_component(TINY, "vae_decoder"), encoder,
                         DecoderTrainSettings(**{**SETTINGS.__dict__, "epochs": 3}), tmp_path)
    assert more[:3] == history and [row["epoch"] for row in more] == [0, 1, 2, 3]


def test_teacher_decoder_distillation_runs(tmp_path):
    decoder, encoder = build_component(TINY, "vae_decoder"), build_component(TINY, "vae_encoder")
    teacher = build_component(TINY, "vae_decoder", seed=5)
    history = train_decoder(decoder, encoder, DecoderTrainSettings(epochs=1, steps_per_epoch=2, resolution=32),
                            tmp_path, teacher=teacher)
    assert len(history) == 2 and history[1]["loss"] > 0
