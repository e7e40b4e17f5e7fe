import numpy as np
import pytest

from md_export.pipeline import TextToImagePipeline
from md_export.torch_networks import torch_networks
from md_export.models import get_preset


@pytest.fixture(scope="module")
def pipeline():
    preset = get_preset("mobilediffusion-tiny")
    networks, sources = torch_networks(preset)
    assert all(s.startswith("random weights") for s in sources.values())
    return TextToImagePipeline(networks, preset.unet.prediction_type)


def test_generate_is_deterministic_per_seed(pipeline):
    a = pipeline.generate("a red circle", steps=3, seed=7)
    b = pipeline.generate("a red circle", steps=3, seed=7)
    c = pipeline.generate("a red circle", steps=3, seed=8)
    assert a.image.shape == (64, 64, 3) and a.image.dtype == np.uint8
    assert np.array_equal(a.image, b.image)
    assert not np.array_equal(a.latent, c.latent)


def test_prompt_and_sampler_change_the_result(pipeline):
    base = pipeline.generate("a red circle", steps=2, seed=0)
    other = pipeline.generate("a blue square", steps=2, seed=0)
    one_step = pipeline.generate("a red circle", steps=1, seed=0, sampler="onestep", guidance_scale=1.0)
    assert not np.array_equal(base.latent, other.latent)
    assert one_step.latent.shape == base.latent.shape
    assert set(base.seconds) == {"text_encoder", "unet", "vae_decoder", "total"}


def test_sample_latent_is_generate_without_the_decoder(pipeline):
    """Calibration records latents only: sample_latent gives generate's latent and never runs the decoder."""
    decoder = pipeline.networks.vae_decoder
    original_run = decoder.run
    calls = []
    decoder.run = lambda feeds: calls.append(1) or original_run(feeds)
    try:
        latent, seconds = pipeline.sample_latent("a red circle", steps=2, seed=3, guidance_scale=5.0)
        assert calls == []
        generated = pipeline.generate("a red circle", steps=2, seed=3, guidance_scale=5.0)
    finally:
        decoder.run = original_run
    assert calls == [1]
    assert np.array_equal(latent, generated.latent)  # same path, bit-identical
    assert set(seconds) == {"text_encoder", "unet"}


def test_fixed_batch_unet_runner_is_called_in_chunks(pipeline):
    """Exported UNets with a static batch of 1 still serve guidance (two calls per step)."""
    calls = []
    unet = pipeline.networks.unet
    original_run = unet.run

    def run(feeds):
        calls.append(feeds["latent"].shape[0])
        return original_run(feeds)

    unet.run = run
    pipeline.unet_batch = 1
    try:
        pipeline.generate("x", steps=2, seed=0, guidance_scale=5.0)
    finally:
        unet.run = original_run
        pipeline.unet_batch = None
    assert calls == [1, 1, 1, 1]


def test_empty_negative_prompt_is_encoded_once_per_pipeline():
    preset = get_preset("mobilediffusion-tiny")
    networks, _ = torch_networks(preset)
    pipeline = TextToImagePipeline(networks, preset.unet.prediction_type)
    encoded = []
    original_run = networks.text_encoder.run

    def run(feeds):
        encoded.append(tuple(feeds["input_ids"][0, :3].tolist()))
        return original_run(feeds)

    networks.text_encoder.run = run
    first = pipeline.generate("a red circle", steps=1, seed=0, guidance_scale=5.0)
    second = pipeline.generate("a blue square", steps=1, seed=0, guidance_scale=5.0)
    empty = tuple(pipeline.tokenizer("")[0, :3].tolist())
    assert len(encoded) == 3 and encoded.count(empty) == 1  # two prompts, one shared "" embedding
    # the cached embedding gives the same picture as encoding it again
    fresh = TextToImagePipeline(networks, preset.unet.prediction_type).generate("a blue square", steps=1, seed=0,
                                                                                guidance_scale=5.0)
    assert np.array_equal(second.latent, fresh.latent) and not np.array_equal(first.latent, second.latent)


def test_batch_2_unet_artifact_runs_guidance_in_one_call(tmp_path):
    from md_export.artifacts import artifact_networks
    from md_export.export import export_preset

    preset = get_preset("mobilediffusion-tiny")
    export_preset(preset, ["text_encoder", "unet", "vae_decoder"], ["onnx"], ["fp32"], tmp_path, dynamic_batch=True)
    networks, _ = artifact_networks(tmp_path, "onnx")
    pipeline = TextToImagePipeline(networks, preset.unet.prediction_type)
    batches = []
    original_run = networks.unet.run

    def run(feeds):
        batches.append(feeds["latent"].shape[0])
        return original_run(feeds)

    networks.unet.run = run
    together = pipeline.generate("a red circle", steps=3, seed=0, guidance_scale=5.0)
    assert batches == [2, 2, 2]  # conditional and unconditional rows in one call per step
    batches.clear()
    pipeline.unet_batch = 1
    apart = pipeline.generate("a red circle", steps=3, seed=0, guidance_scale=5.0)
    assert batches == [1] * 6
    # same rows, same kernels: only batch-dependent reassociation in onnxruntime's GEMMs
    np.testing.assert_allclose(together.latent, apart.latent, rtol=0, atol=1e-5)
