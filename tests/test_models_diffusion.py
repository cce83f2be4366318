"""Gaussian diffusion: schedules, forward process, and that DDIM / ancestral sampling recover the data law."""

from __future__ import annotations

import pytest
import torch

from sopo_ray.models.diffusion import GaussianDiffusion, ddim_timesteps, make_betas, seeded_normal

torch.set_num_threads(1)


@pytest.mark.parametrize("schedule", ["cosine", "linear"])
def test_schedule_goes_from_clean_to_noise(schedule: str) -> None:
    diffusion = GaussianDiffusion(100, schedule)
    abar = diffusion.alphas_cumprod
    assert torch.all(abar[1:] < abar[:-1])
    assert abar[0] > 0.99 and abar[-1] < 0.01
    assert make_betas(schedule, 100).max() <= 0.999


def test_unknown_schedule_is_an_error() -> None:
    with pytest.raises(ValueError, match="schedule"):
        make_betas("quadratic", 10)


@pytest.mark.parametrize("prediction", ["x0", "eps"])
def test_split_inverts_q_sample(prediction: str) -> None:
    diffusion = GaussianDiffusion(50, "cosine", prediction)
    x0, noise = torch.randn(4, 7, 3), torch.randn(4, 7, 3)
    t = torch.tensor([0, 10, 30, 49])
    x_t = diffusion.q_sample(x0, t, noise)
    abar = diffusion.alphas_cumprod[t][:, None, None]
    torch.testing.assert_close(x_t, abar.sqrt() * x0 + (1 - abar).sqrt() * noise)
    x0_hat, eps_hat = diffusion.split(diffusion.target(x0, noise), x_t, t)
    torch.testing.assert_close(x0_hat, x0, atol=2e-3, rtol=1e-3)
    torch.testing.assert_close(eps_hat, noise, atol=2e-3, rtol=1e-3)


def test_ddim_timesteps() -> None:
    assert ddim_timesteps(1000, 50)[0] == 999 and ddim_timesteps(1000, 50)[-1] == 0
    assert len(ddim_timesteps(1000, 50)) == 50
    assert ddim_timesteps(10, 50) == list(range(9, -1, -1))
    with pytest.raises(ValueError):
        ddim_timesteps(10, 0)


def _gaussian_posterior_mean(diffusion: GaussianDiffusion, mu: float, s: float):
    """The exact E[x0 | x_t] when x0 ~ N(mu, s^2): the ideal x0-predictor for that data law."""
    def model_fn(x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        abar = diffusion.alphas_cumprod[t].reshape(-1, *([1] * (x_t.dim() - 1)))
        var = abar * s**2 + (1 - abar)
        return mu + abar.sqrt() * s**2 / var * (x_t - abar.sqrt() * mu)
    return model_fn


@pytest.mark.parametrize("sampler", ["ddim", "ddim_eta1", "ancestral"])
def test_samplers_recover_a_gaussian_data_law(sampler: str) -> None:
    diffusion = GaussianDiffusion(100, "cosine", "x0")
    mu, s = 1.5, 0.3
    model_fn = _gaussian_posterior_mean(diffusion, mu, s)
    gen = torch.Generator().manual_seed(0)

    def noise() -> torch.Tensor:
        return torch.randn(4000, 1, 1, generator=gen)

    if sampler == "ancestral":
        x = diffusion.ancestral_sample(model_fn, noise)
    elif sampler == "ddim":
        x = diffusion.ddim_sample(model_fn, noise, steps=25, eta=0.0)
    else:  # stochastic DDIM ignores the x0 uncertainty within a step, so it needs fine steps
        x = diffusion.ddim_sample(model_fn, noise, steps=100, eta=1.0)
    assert abs(float(x.mean()) - mu) < 0.03
    assert abs(float(x.std()) - s) < 0.03


def test_seeded_normal_rows_depend_only_on_their_seed() -> None:
    a = seeded_normal([torch.Generator().manual_seed(s) for s in (3, 4)], (5, 2))
    b = seeded_normal([torch.Generator().manual_seed(s) for s in (9, 3)], (5, 2))
    assert torch.equal(a[0], b[1])
    assert not torch.equal(a[0], a[1])
