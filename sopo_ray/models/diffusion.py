"""Gaussian diffusion: noise schedules, q_sample, prediction targets, DDIM and full ancestral (DDPM) samplers.

The samplers take a `model_fn(x_t, t) -> prediction` (x0 or eps, per `prediction`; classifier-free guidance is
applied inside `model_fn`) and a `noise()` callable that returns the next standard-normal draw for the whole
batch. Callers build `noise()` from one torch.Generator per sample (`seeded_normal`), so sample b's randomness
depends only on its own seed, never on the batch it is in.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch
from torch import Tensor, nn

ModelFn = Callable[[Tensor, Tensor], Tensor]
NoiseFn = Callable[[], Tensor]


def make_betas(schedule: str, num_timesteps: int) -> np.ndarray:
    """Betas [T] (float64): `cosine` (Nichol & Dhariwal, s=0.008) or `linear` (DDPM's, rescaled to T)."""
    if schedule == "cosine":
        def alpha_bar(u: float) -> float:
            return math.cos((u + 0.008) / 1.008 * math.pi / 2) ** 2
        steps = np.arange(num_timesteps)
        betas = [min(1 - alpha_bar((i + 1) / num_timesteps) / alpha_bar(i / num_timesteps), 0.999) for i in steps]
        return np.asarray(betas, dtype=np.float64)
    if schedule == "linear":
        scale = 1000.0 / num_timesteps
        return np.linspace(scale * 1e-4, scale * 0.02, num_timesteps, dtype=np.float64)
    raise ValueError(f"unknown noise schedule '{schedule}' (use cosine or linear)")


def seeded_normal(generators: list[torch.Generator], shape: tuple[int, ...]) -> Tensor:
    """[B, *shape] standard normal on CPU, row b drawn only from generators[b]."""
    return torch.stack([torch.randn(shape, generator=g) for g in generators])


def ddim_timesteps(num_timesteps: int, steps: int) -> list[int]:
    """Descending, evenly spaced subsequence of `steps` timesteps from T-1 down to 0 (all T if steps >= T)."""
    if steps < 1:
        raise ValueError(f"DDIM needs at least one step, got {steps}")
    if steps >= num_timesteps:
        return list(range(num_timesteps - 1, -1, -1))
    grid = np.linspace(num_timesteps - 1, 0, steps).round().astype(int)
    return sorted(set(grid.tolist()), reverse=True)


class GaussianDiffusion(nn.Module):
    """Forward process and samplers for a model predicting x0 or eps. Buffers are derived from the config
    (not saved in checkpoints) and follow the module's device."""

    def __init__(self, num_timesteps: int, schedule: str = "cosine", prediction: str = "x0") -> None:
        super().__init__()
        if prediction not in ("x0", "eps"):
            raise ValueError(f"prediction must be x0 or eps, got '{prediction}'")
        self.num_timesteps = num_timesteps
        self.prediction = prediction
        betas = make_betas(schedule, num_timesteps)
        alphas_cumprod = np.cumprod(1.0 - betas)
        self.abar64 = alphas_cumprod
        """alpha-bar in float64 on the host (the fused DDIM step's coefficients)."""
        prev = np.append(1.0, alphas_cumprod[:-1])
        posterior_var = betas * (1.0 - prev) / (1.0 - alphas_cumprod)
        tables = {
            "betas": betas,
            "alphas_cumprod": alphas_cumprod,
            "alphas_cumprod_prev": prev,
            "posterior_var": posterior_var,
            "posterior_coef_x0": betas * np.sqrt(prev) / (1.0 - alphas_cumprod),
            "posterior_coef_xt": (1.0 - prev) * np.sqrt(1.0 - betas) / (1.0 - alphas_cumprod),
        }
        for name, value in tables.items():
            self.register_buffer(name, torch.as_tensor(value, dtype=torch.float32), persistent=False)

    @staticmethod
    def _at(table: Tensor, t: Tensor, like: Tensor) -> Tensor:
        """table[t] broadcast to `like`'s rank ([B] -> [B, 1, ..., 1])."""
        return table[t].reshape(-1, *([1] * (like.dim() - 1)))

    def q_sample(self, x0: Tensor, t: Tensor, noise: Tensor) -> Tensor:
        """x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) noise."""
        abar = self._at(self.alphas_cumprod, t, x0)
        return abar.sqrt() * x0 + (1.0 - abar).sqrt() * noise

    def target(self, x0: Tensor, noise: Tensor) -> Tensor:
        """The regression target of the denoiser: x0 or the noise."""
        return x0 if self.prediction == "x0" else noise

    def split(self, out: Tensor, x_t: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
        """Model output -> (x0_hat, eps_hat) at timestep t."""
        abar = self._at(self.alphas_cumprod, t, x_t)
        if self.prediction == "x0":
            return out, (x_t - abar.sqrt() * out) / (1.0 - abar).sqrt()
        return (x_t - (1.0 - abar).sqrt() * out) / abar.sqrt(), out

    def sample_timesteps(self, batch: int, generator: torch.Generator | None = None) -> Tensor:
        """Uniform training timesteps [B] in [0, T) (on CPU)."""
        return torch.randint(0, self.num_timesteps, (batch,), generator=generator)

    def ddim_coefficients(self, step: int, prev: int | None, eta: float) -> tuple[float, float, float]:
        """(c_x, c_out, sigma) of one DDIM step from `step` to `prev` (None: the last step, which returns x0_hat):
        x_prev = c_x * x_t + c_out * out + sigma * z, where `out` is the model output. DDIM's update is linear in
        (x_t, out) for x0- and eps-prediction alike; the coefficients are computed in float64."""
        abar = self.abar64[step]
        if prev is None:
            return (0.0, 1.0, 0.0) if self.prediction == "x0" else (1 / math.sqrt(abar), -math.sqrt(1 / abar - 1), 0.0)
        abar_prev = self.abar64[prev]
        sigma = eta * math.sqrt((1 - abar_prev) / (1 - abar) * (1 - abar / abar_prev))
        k = math.sqrt(max(1 - abar_prev - sigma**2, 0.0))
        if self.prediction == "x0":  # eps = (x_t - sqrt(abar) x0) / sqrt(1 - abar)
            return k / math.sqrt(1 - abar), math.sqrt(abar_prev) - k * math.sqrt(abar / (1 - abar)), sigma
        return math.sqrt(abar_prev / abar), k - math.sqrt(abar_prev * (1 - abar) / abar), sigma

    def ddim_sample(self, model_fn: ModelFn, noise: NoiseFn, steps: int, eta: float = 0.0,
                    fused: bool = False) -> Tensor:
        """DDIM (Song et al.) over `steps` timesteps; eta=0 is deterministic given the initial noise. `fused` (the
        fast sampler) takes each step as one linear combination of x_t and the model output
        (`ddim_coefficients`): the same update in two passes over the batch instead of about eight."""
        x = noise()
        schedule = ddim_timesteps(self.num_timesteps, steps)
        for i, step in enumerate(schedule):
            t = torch.full((x.shape[0],), step, dtype=torch.long, device=x.device)
            out = model_fn(x, t)
            last = i == len(schedule) - 1
            if fused:
                c_x, c_out, sigma = self.ddim_coefficients(step, None if last else schedule[i + 1], eta)
                x = out * c_out if c_x == 0 else torch.add(x * c_x, out, alpha=c_out)
                if eta > 0 and not last:
                    x = x + sigma * noise()
                continue
            x0, eps = self.split(out, x, t)
            if last:
                return x0
            abar = self.alphas_cumprod[step]
            abar_prev = self.alphas_cumprod[schedule[i + 1]]
            sigma = eta * ((1 - abar_prev) / (1 - abar) * (1 - abar / abar_prev)).sqrt()
            x = abar_prev.sqrt() * x0 + (1 - abar_prev - sigma**2).clamp_min(0).sqrt() * eps
            if eta > 0:
                x = x + sigma * noise()
        return x

    def ancestral_sample(self, model_fn: ModelFn, noise: NoiseFn) -> Tensor:
        """The full T-step ancestral (DDPM) sampler: x_{t-1} ~ q(x_{t-1} | x_t, x0_hat)."""
        x = noise()
        for step in range(self.num_timesteps - 1, -1, -1):
            t = torch.full((x.shape[0],), step, dtype=torch.long, device=x.device)
            x0, _ = self.split(model_fn(x, t), x, t)
            mean = self.posterior_coef_x0[step] * x0 + self.posterior_coef_xt[step] * x
            x = mean + self.posterior_var[step].sqrt() * noise() if step > 0 else mean
        return x
