"""`sopo toy`: the paper's 2-D illustration (Fig. 3, App. C.1) of offline vs online vs semi-online DPO.

The world: a ground-truth preference over the plane with two modes, A = (-3, 2) near the pretrained policy and
B = (2, -2) far from it (paper App. C.1: covariances [[1, -0.5], [-0.5, 1]]); a pretrained 2-D diffusion policy that
samples N((-2, 1), 2 I) (the paper's initial generator); a limited offline set of preferred points (drawn from the
preference) and of unpreferred points (a cluster in the lower-left, away from where the policy errs, as in the
paper's figure); and an imperfect reward model, a small classifier that learned to tell the offline preferred points
from uniform background points.

Three methods fine-tune the same reference with the same budget (steps, batch, learning rate) and the project's own
losses (`sopo_ray.objectives.objective_loss`): offline DPO (fixed offline pairs), online DPO (best vs worst of the
current policy's K samples, MoDiPO-O style) and SoPo (offline preferred vs the policy's worst sample, gated by tau).
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Literal

import torch
from pydantic import BaseModel, ConfigDict, model_validator
from torch import Tensor, nn

from sopo_ray.algorithm import pick_pairs
from sopo_ray.config import ObjectiveConfig
from sopo_ray.objectives import PreferenceTerms, objective_loss, preferred_weight, resolve_tau

MODES = torch.tensor([[-3.0, 2.0], [2.0, -2.0]])
"""Centres of the two ground-truth preference modes: A (near the reference) and B (far)."""
MODE_COV = torch.tensor([[1.0, -0.5], [-0.5, 1.0]])
"""Covariance of each preference mode (paper App. C.1)."""
REFERENCE_MEAN, REFERENCE_STD = torch.tensor([-2.0, 1.0]), math.sqrt(2.0)
"""The pretrained policy's distribution N((-2, 1), 2 I) (paper App. C.1)."""
OFFLINE_NEG_MEAN, OFFLINE_NEG_STD = torch.tensor([-4.0, -4.0]), 0.6
"""The offline unpreferred cluster, lower-left, far from the policy's mass (paper Fig. 3)."""
BOX = 6.0
"""The plane is [-BOX, BOX]^2 for the reward model's background points and the figure."""
METHODS = ("offline_dpo", "online_dpo", "sopo")
"""The three methods compared, each an `ObjectiveConfig.name`."""


class ToySettings(BaseModel):
    """Everything `sopo toy` varies; CPU-sized defaults (the whole run takes well under a minute)."""

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)

    seed: int = 0
    """Seed of the world (offline sets, reward model), the reference and the three runs."""
    steps: int = 300
    """Alignment optimizer steps per method (the same budget for all three)."""
    batch_size: int = 128
    """Pairs per step."""
    lr: float = 1e-3
    """Adam learning rate of alignment."""
    reward: Literal["learned", "exact"] = "learned"
    """`learned`: a classifier of the offline preferred points (imperfect); `exact`: the true preference itself."""
    k: int = 2
    """Online samples per group (SoPo and online DPO)."""
    beta: float = 1.0
    """DPO temperature."""
    timestep_weight: float = 1.0
    """T * w_t folded into one constant; 1 as in the released SoPo code (with beta = 1)."""
    tau_quantile: float = 0.1
    """tau = this quantile of r(x^w) over the offline preferred set (the reward is a learned classifier)."""
    beta_w_c: float = 2.0
    """C in beta_w = beta * (C - min_k sim(x^w, x^k)); sim is a Gaussian kernel of width 1."""
    n_offline: int = 64
    """Offline preferred points, and as many offline unpreferred points."""
    diffusion_steps: int = 10
    """Diffusion steps T of the toy policy (cosine schedule, ancestral sampling)."""
    hidden: int = 64
    """Width of the denoiser MLP."""
    pretrain_steps: int = 800
    """Steps pretraining the reference on N((-2, 1), 2 I)."""
    reward_steps: int = 400
    """Steps training the reward classifier."""
    eval_samples: int = 2000
    """Samples drawn from each final policy for the metrics and the figure."""
    curve_every: int = 25
    """Every this many steps, record the mean true preference and spread of 500 samples (learning curves)."""

    @model_validator(mode="after")
    def _positive(self) -> ToySettings:
        for name in ("steps", "batch_size", "n_offline", "diffusion_steps", "hidden", "pretrain_steps",
                     "reward_steps", "eval_samples", "curve_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.k < 2:
            raise ValueError(f"k must be >= 2 to pick a worst sample, got {self.k}")
        return self


# ---------------------------------------------------------------------------------------------------------
# The world: ground-truth preference, offline sets, reward model
# ---------------------------------------------------------------------------------------------------------


def true_preference(x: Tensor) -> Tensor:
    """Ground-truth preference in [0, 1] of points [N, 2]: the two-mode density scaled so each peak is 1."""
    prec = torch.linalg.inv(MODE_COV)
    d = x[:, None, :] - MODES[None]
    maha = torch.einsum("nmi,ij,nmj->nm", d, prec, d)
    return torch.exp(-0.5 * maha).sum(dim=1).clamp(max=1.0)


def sample_preference(n: int, gen: torch.Generator) -> Tensor:
    """n points from the ground-truth preference distribution (equal-weight mixture of the two modes)."""
    which = torch.randint(0, 2, (n,), generator=gen)
    chol = torch.linalg.cholesky(MODE_COV)
    return MODES[which] + torch.randn(n, 2, generator=gen) @ chol.T


@dataclass
class World:
    """The fixed data of one toy run: offline sets and the learned reward model."""

    preferred: Tensor      # [n_offline, 2] offline x^w
    unpreferred: Tensor    # [n_offline, 2] offline x^l (fixed pairs with `preferred`)
    reward: nn.Module      # points [N, 2] -> r in [0, 1]


class ExactReward(nn.Module):
    """The ground-truth preference used as the reward model (the `exact` ablation)."""

    def forward(self, x: Tensor) -> Tensor:
        return true_preference(x)


class RewardModel(nn.Module):
    """A small MLP classifier r(x) = sigmoid(f(x)): offline preferred points vs uniform background."""

    def __init__(self, hidden: int = 64) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(2, hidden), nn.SiLU(), nn.Linear(hidden, hidden), nn.SiLU(),
                                 nn.Linear(hidden, 1))

    def forward(self, x: Tensor) -> Tensor:
        return torch.sigmoid(self.net(x / BOX)).squeeze(-1)


def build_world(settings: ToySettings) -> World:
    """Offline sets and a reward model trained on them; deterministic in `settings.seed`."""
    gen = torch.Generator().manual_seed(settings.seed)
    preferred = sample_preference(settings.n_offline, gen)
    unpreferred = OFFLINE_NEG_MEAN + OFFLINE_NEG_STD * torch.randn(settings.n_offline, 2, generator=gen)
    if settings.reward == "exact":
        return World(preferred, unpreferred, ExactReward())
    torch.manual_seed(settings.seed)
    reward = RewardModel()
    opt = torch.optim.Adam(reward.parameters(), lr=3e-3)
    for _ in range(settings.reward_steps):
        background = (torch.rand(256, 2, generator=gen) * 2 - 1) * BOX
        logits = reward.net(torch.cat([preferred, background]) / BOX).squeeze(-1)
        labels = torch.cat([torch.ones(len(preferred)), torch.zeros(len(background))])
        weight = torch.cat([torch.full((len(preferred),), 0.5 / len(preferred)),
                            torch.full((len(background),), 0.5 / len(background))])
        loss = (nn.functional.binary_cross_entropy_with_logits(logits, labels, reduction="none") * weight).sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
    reward.requires_grad_(False)
    return World(preferred, unpreferred, reward)


# ---------------------------------------------------------------------------------------------------------
# The policy: a tiny eps-predicting diffusion model on the plane
# ---------------------------------------------------------------------------------------------------------


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


# ---------------------------------------------------------------------------------------------------------
# Alignment: the three methods through the project's objective interface
# ---------------------------------------------------------------------------------------------------------


def objective_config(method: str, settings: ToySettings) -> ObjectiveConfig:
    """The ObjectiveConfig of one toy method (SoPo with the similarity weight, tau from a quantile)."""
    return ObjectiveConfig(name=method, k=settings.k, beta=settings.beta, timestep_weight=settings.timestep_weight,
                           beta_w="similarity", beta_w_c=settings.beta_w_c, tau_quantile=settings.tau_quantile)


def align(method: str, reference: ToyDiffusion, world: World, settings: ToySettings, tau: float,
          ) -> tuple[ToyDiffusion, list[dict[str, float]]]:
    """Fine-tune a copy of `reference` with `method` for `settings.steps` steps.

    Returns the policy and, every `curve_every` steps, the step's loss metrics plus the mean true preference and
    spread of 500 fresh samples (the learning curves).
    """
    cfg = objective_config(method, settings)
    torch.manual_seed(settings.seed + 2)
    gen = torch.Generator().manual_seed(settings.seed + 2)
    policy = copy.deepcopy(reference).requires_grad_(True)
    opt = torch.optim.Adam(policy.parameters(), lr=settings.lr)
    rows = torch.arange(settings.batch_size)
    history = []
    for step in range(settings.steps):
        idx = torch.randint(0, settings.n_offline, (settings.batch_size,), generator=gen)
        beta_w = None
        if method == "offline_dpo":
            x_w, x_l = world.preferred[idx], world.unpreferred[idx]
            reward_l = world.reward(x_l)
        else:
            group = policy.sample(settings.batch_size * settings.k, gen).view(settings.batch_size, settings.k, 2)
            rewards = world.reward(group.view(-1, 2)).view(settings.batch_size, settings.k)
            best, worst = (torch.from_numpy(i) for i in pick_pairs(rewards.detach().numpy()))
            x_l, reward_l = group[rows, worst], rewards[rows, worst]
            if method == "online_dpo":
                x_w = group[rows, best]
            else:
                x_w = world.preferred[idx]
                sims = torch.exp(-0.5 * ((x_w[:, None] - group) ** 2).sum(-1))
                beta_w = preferred_weight(cfg, sims)
        t = torch.randint(0, policy.steps, (settings.batch_size,), generator=gen)
        noise = torch.randn(settings.batch_size, 2, generator=gen)
        with torch.no_grad():
            err_w_ref, err_l_ref = reference.denoise_error(x_w, t, noise), reference.denoise_error(x_l, t, noise)
        terms = PreferenceTerms(err_w_theta=policy.denoise_error(x_w, t, noise), err_w_ref=err_w_ref,
                                err_l_theta=policy.denoise_error(x_l, t, noise), err_l_ref=err_l_ref,
                                reward_l=reward_l, beta_w=beta_w)
        loss, metrics = objective_loss(cfg, terms, tau=tau)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if (step + 1) % settings.curve_every == 0:
            points = policy.sample(500, torch.Generator().manual_seed(settings.seed + 3))
            metrics |= {"step": step + 1, "true_preference": float(true_preference(points).mean()),
                        "spread": float(points.std(dim=0).mean())}
            history.append(metrics)
    return policy.requires_grad_(False), history


def evaluate(samples: Tensor, reward: nn.Module) -> dict[str, float | list[float]]:
    """Mean true preference, mean reward, per-mode mass, modes covered, spread and low-preference mass."""
    pref = true_preference(samples)
    prec = torch.linalg.inv(MODE_COV)
    d = samples[:, None, :] - MODES[None]
    maha = torch.einsum("nmi,ij,nmj->nm", d, prec, d)
    mass = (maha < 4.0).float().mean(dim=0)                                  # within 2 sigma of each mode
    return {
        "mean_true_preference": float(pref.mean()),
        "mean_reward": float(reward(samples).mean()),
        "mode_mass": [round(float(m), 4) for m in mass],
        "modes_covered": int((mass >= 0.1).sum()),
        "spread": float(samples.std(dim=0).mean()),
        "frac_low_preference": float((pref < 0.05).float().mean()),
    }


# ---------------------------------------------------------------------------------------------------------
# One full run, and the summary over seeds
# ---------------------------------------------------------------------------------------------------------


@dataclass
class ToyResult:
    """Everything one seed of the toy produced."""

    settings: ToySettings
    world: World
    tau: float                            # the SoPo threshold, from the offline preferred set's rewards
    samples: dict[str, Tensor]            # "reference" and each method -> [eval_samples, 2] final samples
    metrics: dict[str, dict]              # same keys -> `evaluate` output; methods add "curve"


def run_toy(settings: ToySettings) -> ToyResult:
    """Build the world, pretrain the reference and align it with each method; deterministic in the seed."""
    world = build_world(settings)
    reference = pretrain_reference(settings)
    tau = resolve_tau(objective_config("sopo", settings), world.reward(world.preferred))
    samples = {"reference": reference.sample(settings.eval_samples, torch.Generator().manual_seed(settings.seed + 4))}
    metrics: dict[str, dict] = {"reference": evaluate(samples["reference"], world.reward)}
    for method in METHODS:
        policy, curve = align(method, reference, world, settings, tau)
        # the same sampling noise for every policy, so the panels differ only by the learned denoiser
        samples[method] = policy.sample(settings.eval_samples, torch.Generator().manual_seed(settings.seed + 4))
        metrics[method] = evaluate(samples[method], world.reward) | {"curve": curve}
    return ToyResult(settings, world, tau, samples, metrics)


SUMMARY_KEYS = ("mean_true_preference", "mean_reward", "modes_covered", "spread", "frac_low_preference")
"""The scalar metrics averaged over seeds."""


def summarize(results: list[ToyResult]) -> dict:
    """JSON-able summary: settings, per-seed metrics (with curves) and the mean of each scalar metric per method."""
    keys = ("reference", *METHODS)
    mean = {key: {name: sum(float(r.metrics[key][name]) for r in results) / len(results) for name in SUMMARY_KEYS}
            for key in keys}
    return {
        "settings": results[0].settings.model_dump(exclude={"seed"}),
        "seeds": [r.settings.seed for r in results],
        "mean": mean,
        "runs": [{"seed": r.settings.seed, "tau": r.tau, **r.metrics} for r in results],
    }
