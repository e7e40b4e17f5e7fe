import numpy as np
import pytest

from md_export.samplers import DDIMSampler, NoiseSchedule, OneStepSampler, split_prediction


def test_ddim_timesteps_match_sd15_leading_spacing():
    assert DDIMSampler(4).timesteps().tolist() == [751, 501, 251, 1]
    assert DDIMSampler(50).timesteps()[:3].tolist() == [981, 961, 941]


def test_steps_out_of_range_are_rejected():
    with pytest.raises(ValueError, match="steps"):
        DDIMSampler(0)


@pytest.mark.parametrize("kind", ["epsilon", "v_prediction", "sample"])
def test_prediction_types_recover_x0_and_noise(kind):
    rng = np.random.default_rng(0)
    x0, noise = rng.standard_normal((2, 1, 4, 4)).astype(np.float32)
    schedule = NoiseSchedule.scaled_linear()
    a = schedule.alphas_cumprod[400]
    xt = schedule.add_noise(x0, noise, 400)
    target = {"epsilon": noise, "v_prediction": np.sqrt(a) * noise - np.sqrt(1 - a) * x0, "sample": x0}[kind]
    got_x0, got_eps = split_prediction(target.astype(np.float32), xt, a, kind)
    np.testing.assert_allclose(got_x0, x0, atol=1e-4)  # float32 round trip
    np.testing.assert_allclose(got_eps, noise, atol=1e-4)


def test_ddim_with_an_oracle_unet_recovers_the_clean_latent():
    """A UNet that knows x0 must land DDIM on x0 (up to the final alpha_cumprod[0] step)."""
    rng = np.random.default_rng(1)
    x0 = rng.standard_normal((1, 4, 8, 8)).astype(np.float32)
    schedule = NoiseSchedule.scaled_linear()

    def oracle(latent, timestep, text_emb):
        a = schedule.alphas_cumprod[int(timestep[0])]
        return ((latent - np.sqrt(a) * x0) / np.sqrt(1 - a)).astype(np.float32)

    noise = rng.standard_normal(x0.shape).astype(np.float32)
    out = DDIMSampler(10).sample(oracle, noise, np.zeros((1, 77, 8), np.float32), None, 1.0, "epsilon")
    a0 = schedule.alphas_cumprod[0]
    expected = np.sqrt(a0) * x0 + np.sqrt(1 - a0) * (noise * 0 + (out - np.sqrt(a0) * x0) / np.sqrt(1 - a0))
    assert np.abs(out - x0).max() < 0.1  # alpha_cumprod[0] = 0.99915: within a few % of x0
    np.testing.assert_allclose(out, expected, atol=1e-5)


def test_guidance_batches_uncond_then_cond():
    seen = []

    def unet(latent, timestep, text_emb):
        seen.append(text_emb[:, 0, 0].tolist())
        return np.where(text_emb[:, :1, :1, None] > 0, 1.0, 0.0).astype(np.float32) * np.ones_like(latent)

    cond, uncond = np.ones((1, 77, 4), np.float32), -np.ones((1, 77, 4), np.float32)
    out = OneStepSampler().sample(unet, np.zeros((1, 4, 2, 2), np.float32), cond, uncond, 3.0, "sample")
    assert seen == [[-1.0, 1.0]]
    np.testing.assert_allclose(out, 3.0)  # 0 + 3 * (1 - 0)
