"""The toy's world: a ground-truth preference over the plane with two modes, A = (-3, 2) near the pretrained policy
and B = (2, -2) far from it (paper App. C.1: covariances [[1, -0.5], [-0.5, 1]]); a pretrained 2-D diffusion
policy that samples N((-2, 1), 2 I) (the paper's initial generator); a limited offline set of preferred points
(drawn from the preference) and of unpreferred points (a cluster in the lower-left, away from where the policy
errs, as in the paper's figure); and an imperfect reward model, a small classifier that learned to tell the
offline preferred points from uniform background points.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
from pydantic import BaseModel, ConfigDict, model_validator
from torch import Tensor, nn

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
