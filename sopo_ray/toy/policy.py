"""The toy's policy: a tiny eps-predicting diffusion model on the plane, and the reference pretrained on
N((-2, 1), 2 I)."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from sopo_ray.toy.world import REFERENCE_MEAN, REFERENCE_STD, ToySettings


class ToyDiffusion(nn.Module):
    """eps_theta(x_t, t): an MLP denoiser with a cosine schedule of T steps; points are scaled by 1/3 inside."""

    scale = 3.0

    def __init__(self, steps: int, hidden: int) -> None:
        super().__init__()
        self.steps = steps
        s = 0.008
        grid = torch.arange(steps + 1, dtype=torch.float64) / steps
        abar = torch.cos((grid + s) / (1 + s) * math.pi / 2) ** 2
        abar = (abar / abar[0]).clamp(min=1e-5)
        self.register_buffer("abar", abar[1:].float())                          # [T], abar[t] for t = 0..T-1
        self.register_buffer("abar_prev", abar[:-1].float())
        self.net = nn.Sequential(nn.Linear(2 + 16, hidden), nn.SiLU(), nn.Linear(hidden, hidden), nn.SiLU(),
                                 nn.Linear(hidden, hidden), nn.SiLU(), nn.Linear(hidden, 2))

    def _eps(self, z_t: Tensor, t: Tensor) -> Tensor:
        freqs = torch.exp(torch.arange(8, dtype=torch.float32) * -math.log(100.0) / 7)
        angle = (t.float()[:, None] + 1) * freqs[None]
        return self.net(torch.cat([z_t, angle.sin(), angle.cos()], dim=-1))

    def denoise_error(self, x0: Tensor, t: Tensor, noise: Tensor) -> Tensor:
        """Per-sample mean ||eps - eps_theta(x_t, t)||^2 ([N]); x_t = sqrt(abar_t) x0/3 + sqrt(1 - abar_t) eps."""
        a = self.abar[t][:, None]
        z_t = a.sqrt() * (x0 / self.scale) + (1 - a).sqrt() * noise
        return ((self._eps(z_t, t) - noise) ** 2).mean(dim=-1)

    @torch.no_grad()
    def sample(self, n: int, gen: torch.Generator) -> Tensor:
        """n points by ancestral (DDPM) sampling over all T steps; the noise comes only from `gen`."""
        z = torch.randn(n, 2, generator=gen)
        for step in reversed(range(self.steps)):
            t = torch.full((n,), step, dtype=torch.long)
            a, a_prev = self.abar[step], self.abar_prev[step]
            eps = self._eps(z, t)
            z0 = ((z - (1 - a).sqrt() * eps) / a.sqrt()).clamp(-3.0, 3.0)
            alpha = a / a_prev
            mean = (a_prev.sqrt() * (1 - alpha) * z0 + alpha.sqrt() * (1 - a_prev) * z) / (1 - a)
            if step > 0:
                var = (1 - a_prev) / (1 - a) * (1 - alpha)
                z = mean + var.sqrt() * torch.randn(n, 2, generator=gen)
            else:
                z = mean
        return z * self.scale


def pretrain_reference(settings: ToySettings) -> ToyDiffusion:
    """The reference policy: a ToyDiffusion fitted to N((-2, 1), 2 I) by the plain diffusion loss."""
    torch.manual_seed(settings.seed + 1)
    gen = torch.Generator().manual_seed(settings.seed + 1)
    model = ToyDiffusion(settings.diffusion_steps, settings.hidden)
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, settings.pretrain_steps)
    for _ in range(settings.pretrain_steps):
        x0 = REFERENCE_MEAN + REFERENCE_STD * torch.randn(256, 2, generator=gen)
        t = torch.randint(0, model.steps, (256,), generator=gen)
        loss = model.denoise_error(x0, t, torch.randn(256, 2, generator=gen)).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
    return model.requires_grad_(False)
