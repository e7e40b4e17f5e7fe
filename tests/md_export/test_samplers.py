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


def _sd15_alphas_cumprod_by_hand() -> np.ndarray:
    """SD-1.5's scaled_linear schedule written out in float64, apart from NoiseSchedule."""
    betas = np.array([(0.00085**0.5 + (0.012**0.5 - 0.00085**0.5) * i / 999) ** 2 for i in range(1000)])
    return np.cumprod(1.0 - betas)


def test_ddim_with_an_oracle_unet_recovers_the_clean_latent():
    """A UNet that knows x0 predicts, at every step, the noise that leads from x0 to the current
    latent; DDIM (eta 0) then keeps that noise fixed: after the first step at t = 901 the latent is
    sqrt(a_prev) x0 + sqrt(1 - a_prev) eps1, so the next oracle call returns eps1 again, and the
    last step (onto alphas_cumprod[0], SD-1.5's set_alpha_to_one=False) ends at
        sqrt(a0) x0 + sqrt(1 - a0) eps1,   eps1 = (noise - sqrt(a901) x0) / sqrt(1 - a901).
    Computed here in float64 from the hand-written schedule, not from the sampler's own arrays."""
    rng = np.random.default_rng(1)
    x0 = rng.standard_normal((1, 4, 8, 8)).astype(np.float32)
    schedule = NoiseSchedule.scaled_linear()

    def oracle(latent, timestep, text_emb):
        a = schedule.alphas_cumprod[int(timestep[0])]
        return ((latent - np.sqrt(a) * x0) / np.sqrt(1 - a)).astype(np.float32)

    noise = rng.standard_normal(x0.shape).astype(np.float32)
    out = DDIMSampler(10).sample(oracle, noise, np.zeros((1, 77, 8), np.float32), None, 1.0, "epsilon")

    alphas = _sd15_alphas_cumprod_by_hand()
    np.testing.assert_allclose(schedule.alphas_cumprod, alphas, rtol=1e-12)  # the schedule itself, float64
    x0_64, noise_64 = x0.astype(np.float64), noise.astype(np.float64)
    eps1 = (noise_64 - np.sqrt(alphas[901]) * x0_64) / np.sqrt(1 - alphas[901])  # 10 steps: 901, 801, ..., 1
    expected = np.sqrt(alphas[0]) * x0_64 + np.sqrt(1 - alphas[0]) * eps1
    # float32 sampling against the float64 closed form: 10 steps of float32 rounding, |values| < 5
    np.testing.assert_allclose(out, expected, atol=1e-5)
    assert np.abs(out - x0).max() < 0.15  # sqrt(1 - a0) = 0.029 times |eps1| < 5: within 0.15 of x0
    # the check tells the SD-1.5 last step from the set_alpha_to_one variant, which would land on x0:
    assert np.abs(expected - x0_64).max() > 100 * 1e-5


def test_ddim_update_matches_the_formula_step_by_step():
    """Known eps: a UNet returning a fixed noise field. Each DDIM step by hand in float64:
    x0_hat = (x - sqrt(1 - a_t) eps) / sqrt(a_t); x <- sqrt(a_prev) x0_hat + sqrt(1 - a_prev) eps."""
    rng = np.random.default_rng(2)
    eps = rng.standard_normal((1, 4, 8, 8)).astype(np.float32)
    start = rng.standard_normal((1, 4, 8, 8)).astype(np.float32)
    seen, steps = [], []

    def record(step, total, t, latent):
        seen.append(t)
        steps.append(latent)

    out = DDIMSampler(4).sample(lambda latent, t, emb: eps, start, np.zeros((1, 77, 8), np.float32), None, 1.0,
                                "epsilon", callback=record)

    alphas = _sd15_alphas_cumprod_by_hand()
    timesteps = [751, 501, 251, 1]  # leading spacing, steps_offset 1
    previous = timesteps[1:] + [0]  # the last step lands on alphas_cumprod[0]
    x, eps_64 = start.astype(np.float64), eps.astype(np.float64)
    assert seen == timesteps
    for t, t_prev, got in zip(timesteps, previous, steps):
        x0_hat = (x - np.sqrt(1 - alphas[t]) * eps_64) / np.sqrt(alphas[t])
        x = np.sqrt(alphas[t_prev]) * x0_hat + np.sqrt(1 - alphas[t_prev]) * eps_64
        # float32 against float64: 1/sqrt(a_751) = 4.3 amplifies rounding, |values| < 30
        np.testing.assert_allclose(got, x, rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(out, x, rtol=1e-5, atol=1e-4)


def test_guidance_batches_uncond_then_cond():
    seen = []

    def unet(latent, timestep, text_emb):
        seen.append(text_emb[:, 0, 0].tolist())
        return np.where(text_emb[:, :1, :1, None] > 0, 1.0, 0.0).astype(np.float32) * np.ones_like(latent)

    cond, uncond = np.ones((1, 77, 4), np.float32), -np.ones((1, 77, 4), np.float32)
    out = OneStepSampler().sample(unet, np.zeros((1, 4, 2, 2), np.float32), cond, uncond, 3.0, "sample")
    assert seen == [[-1.0, 1.0]]
    np.testing.assert_allclose(out, 3.0)  # 0 + 3 * (1 - 0)
