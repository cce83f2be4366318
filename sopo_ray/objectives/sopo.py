"""SoPo for diffusion models (Tan et al., paper Eq. 14-17): offline x^w, online x^l gated by a reward threshold.

Per sample, with L^w = L(theta, ref, x^w_t) and L^l = L(theta, ref, x^l_t) (Diffusion-DPO differences, shared t and
noise), x^l the lowest-reward of the policy's K samples and x^w the dataset motion (paper Eq. 17):

    -log sigmoid(-T w_t (beta_w(x^w) L^w - beta L^l))   if r(x^l, c) < tau   ("valuable unpreferred", Eq. 16 vu)
    -log sigmoid(-T w_t beta_w(x^w) L^w)                 otherwise            (Eq. 13/16 hu: drop the x^l term)

beta_w(x^w) = beta (C - min_k sim(x^w, x^k)) (Sec. 4.3) weighs the preferred term more when every online sample is
far from the dataset motion.

Bracket inconsistency in the source: App. Algorithm 1 (line 8) and Eq. S4 write sigma(-T w_t beta_w (L^w - beta L^l)),
i.e. beta_w multiplies both terms, whereas Eq. 16, 17, S3 and S15 put beta_w on the x^w term only. The released
code scales only the x^w term, and so does this module (with beta = 1 the readings differ by whether x^l's term is
also scaled by C - S).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from sopo_ray.config import ObjectiveConfig
from sopo_ray.errors import ConfigError, DataError


def below_tau(reward_l: Tensor, tau: float) -> Tensor:
    """The Eq. 17 gate m = 1[r(x^l, c) < tau] as floats ([B]); r == tau is NOT below.

    A non-finite reward gives NaN instead of 0 or 1, so it reaches the loss and the trainer's non-finite counter
    rather than silently switching the x^l term off.
    """
    gate = (reward_l < tau).to(reward_l.dtype)
    return torch.where(torch.isfinite(reward_l), gate, torch.full_like(gate, float("nan")))


def sopo_logit(diff_w: Tensor, diff_l: Tensor, reward_l: Tensor, beta_w: Tensor, beta: float, tau: float,
               scale: float) -> Tensor:
    """The argument of log sigmoid in paper Eq. 17 per sample ([B]): -T w_t (beta_w L^w - m beta L^l).

    `diff_w`, `diff_l`: L(theta, ref, x_t) of x^w and x^l; `reward_l`: r(x^l, c); `beta_w`: per-sample preferred
    weight (`preferred_weight`); `scale`: T * w_t (`dpo_scale`). The gate m multiplies (not selects) the x^l term,
    so a NaN in either term still makes the logit NaN, as it should. beta_w scales only the x^w term (see the
    module docstring).
    """
    gate = below_tau(reward_l, tau)
    return -scale * (beta_w.detach() * diff_w - gate * beta * diff_l)


def sopo_loss(diff_w: Tensor, diff_l: Tensor, reward_l: Tensor, beta_w: Tensor, beta: float, tau: float,
              scale: float) -> Tensor:
    """Per-sample SoPo loss of paper Eq. 17 ([B]): -log sigmoid(`sopo_logit`)."""
    return -F.logsigmoid(sopo_logit(diff_w, diff_l, reward_l, beta_w, beta, tau, scale))


def dpo_scale(cfg: ObjectiveConfig, num_timesteps: int | None) -> float:
    """T * w_t in front of the DPO logit (Eq. 17, App. Eq. S27): `num_timesteps` (w_t = 1, Diffusion-DPO's constant
    weighting) when `cfg.timestep_weight` is "T", else the number configured (1 = the released code)."""
    if cfg.timestep_weight != "T":
        return float(cfg.timestep_weight)
    if num_timesteps is None:
        raise ValueError('objective.timestep_weight is "T": pass the model\'s num_timesteps')
    return float(num_timesteps)


def preferred_weight(cfg: ObjectiveConfig, sim_to_samples: Tensor) -> Tensor:
    """beta_w(x^w) per group ([B, K] -> [B]); paper Sec. 4.3: beta * (C - min_k sim(x^w, x^k)), or beta if constant.

    `sim_to_samples[b, k]` is the similarity of dataset motion b to online sample k; the released code uses the
    reward model's motion-motion score (cos + 1) / 2, so with C = 2 the weight lies in [beta, 2 beta].
    """
    if sim_to_samples.ndim != 2 or sim_to_samples.shape[1] < 1:
        raise ValueError(f"sim_to_samples must be [B, K] with K >= 1, got {tuple(sim_to_samples.shape)}")
    if cfg.beta_w == "constant":
        return torch.full(sim_to_samples.shape[:1], cfg.beta, dtype=sim_to_samples.dtype,
                          device=sim_to_samples.device)
    return cfg.beta * (cfg.beta_w_c - sim_to_samples.detach().min(dim=1).values)


def tau_from_quantile(rewards: Tensor | np.ndarray, q: float) -> float:
    """tau as the q-quantile (linear interpolation) of r(x^w, c) over the dataset's own (c, x^w) pairs.

    A reward model trained elsewhere has its own score scale, so an absolute tau = 0.45 may gate everything or
    nothing; a quantile says "x^l is unpreferred if it scores below the worst q of real motions".
    """
    values = torch.as_tensor(rewards, dtype=torch.float64).flatten()
    if values.numel() == 0:
        raise DataError("cannot take a tau quantile of zero rewards; score at least one (caption, motion) pair")
    bad = int((~torch.isfinite(values)).sum())
    if bad:
        raise DataError(f"{bad} of {values.numel()} dataset rewards are NaN/inf; check the reward checkpoint")
    if not 0.0 < q < 1.0:
        raise ValueError(f"quantile must lie in (0, 1), got {q}")
    return float(torch.quantile(values, q))


def resolve_tau(cfg: ObjectiveConfig, dataset_rewards: Tensor | np.ndarray | None = None,
                worst_rewards: Tensor | np.ndarray | None = None) -> float:
    """The threshold a run uses: `cfg.tau`; or `tau_from_quantile(dataset_rewards, cfg.tau_quantile)` (a quantile
    of r(x^w, c) on the dataset's pairs); or, with `cfg.tau_gate`, the tau_gate-quantile of `worst_rewards`, the
    min_k r of the base policy's groups, so that this fraction of them gates x^l on."""
    if cfg.tau_quantile is not None:
        if dataset_rewards is None:
            raise ConfigError("objective.tau_quantile is set but no dataset rewards were scored; "
                              "score r(x^w, c) on the train pairs or unset objective.tau_quantile")
        return tau_from_quantile(dataset_rewards, cfg.tau_quantile)
    if cfg.tau_gate is not None:
        if worst_rewards is None:
            raise ConfigError("objective.tau_gate is set but no policy groups were scored; sample groups with the "
                              "base model or unset objective.tau_gate")
        return tau_from_quantile(worst_rewards, cfg.tau_gate)
    return cfg.tau
