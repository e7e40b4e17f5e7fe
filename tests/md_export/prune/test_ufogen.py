"""UFOGen mechanics: loss shapes, which parameters each loss trains, reconstruction going down."""

import pytest
import torch

from md_export.prune.ufogen import (UFOGenSettings, UFOGenTrainer, UNetDiscriminator, alphas_cumprod,
                                    discriminator_loss, generator_loss, predict_x0, q_sample, reconstruction_error,
                                    ufogen_forward)
from md_export.models import build_component, get_preset

TINY = get_preset("mobilediffusion-tiny")


@pytest.fixture
def synthetic():
    """A tiny synthetic 'dataset': 4 smooth latents and their text embeddings."""
    g = torch.Generator().manual_seed(0)
    base = torch.randn(4, 4, 2, 2, generator=g)
    x0 = torch.nn.functional.interpolate(base, size=(8, 8), mode="bilinear", align_corners=False)
    return x0, torch.randn(4, 77, 64, generator=g)


def grads(module):
    return [p.grad for p in module.parameters()]


def test_discriminator_starts_from_the_unet_with_a_zero_last_layer(synthetic):
    unet = build_component(TINY, "unet")
    disc = UNetDiscriminator(unet)
    assert torch.count_nonzero(disc.unet.conv_out.weight) == 0
    assert torch.equal(disc.unet.conv_in.weight, unet.conv_in.weight)
    assert disc.unet.conv_in.weight.data_ptr() != unet.conv_in.weight.data_ptr()  # a copy, not shared
    x0, text = synthetic
    logits = disc(x0, torch.full((4,), 10), text)
    assert logits.shape == (4,) and torch.count_nonzero(logits) == 0


def test_losses_are_scalars_and_train_only_their_own_network(synthetic):
    x0, text = synthetic
    generator = build_component(TINY, "unet").train()
    disc = UNetDiscriminator(generator)
    fwd = ufogen_forward(generator, x0, text, "epsilon", alphas_cumprod(), torch.Generator().manual_seed(1))
    assert fwd.t.shape == (4,) and int(fwd.t.min()) >= 1
    assert fwd.x0_fake.shape == fwd.real_prev.shape == fwd.fake_prev.shape == x0.shape

    d_loss = discriminator_loss(disc, fwd, text)
    assert d_loss.shape == ()
    d_loss.backward(retain_graph=True)
    assert all(g is None for g in grads(generator)), "discriminator loss must not reach the generator"
    assert disc.unet.conv_out.weight.grad is not None and disc.unet.conv_out.weight.grad.abs().sum() > 0

    disc.zero_grad(set_to_none=True)
    g = generator_loss(disc, fwd, x0, text, rec_weight=1.0)
    assert all(v.shape == () for v in g.values())
    assert torch.allclose(g["generator"], g["adversarial"] + g["reconstruction"])
    g["generator"].backward()
    assert all(grad is None for grad in grads(disc)), "generator loss must not reach the discriminator"
    assert all(p.requires_grad for p in disc.parameters()), "the discriminator is trainable again afterwards"
    assert sum(float(p.grad.abs().sum()) for p in generator.parameters() if p.grad is not None) > 0


def test_x0_parameterisations_invert_the_forward_process():
    alphas = alphas_cumprod()
    x0, noise = torch.randn(2, 4, 8, 8), torch.randn(2, 4, 8, 8)
    t = torch.tensor([100, 900])
    x_t = q_sample(x0, t, noise, alphas)
    eps_model = lambda x, timestep, text: noise  # noqa: E731  a perfect epsilon predictor
    assert torch.allclose(predict_x0(eps_model, x_t, t, None, "epsilon", alphas), x0, atol=1e-4)


def test_a_few_steps_reduce_the_reconstruction_term(synthetic):
    x0, text = synthetic
    generator = build_component(TINY, "unet")
    before = reconstruction_error(generator, x0, text, "epsilon")
    trainer = UFOGenTrainer(generator, UFOGenSettings(steps=8, batch_size=4, generator_lr=1e-3,
                                                      discriminator_lr=1e-3))
    trace = [trainer.step(x0, text) for _ in range(8)]
    after = reconstruction_error(generator, x0, text, "epsilon")
    assert after < 0.8 * before, (before, after, trace)
    assert all(set(row) == {"discriminator", "generator", "adversarial", "reconstruction"} for row in trace)
