"""The one interface the learner calls: `objective_loss(cfg, terms)` for SoPo and every baseline.

The learner assembles `PreferenceTerms` from the samples `registry.objective(cfg.name)` names, with the model's
masked denoising errors of policy and reference on x^w and x^l at the same t and noise, and gets back the mean loss
and a dict of plain-float metrics (bare names; the learner logs them under `loss/`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from sopo_ray.config import ObjectiveConfig
from sopo_ray.objectives.baselines import sft_loss
from sopo_ray.objectives.diffusion_dpo import diffusion_dpo_logit, dpo_difference, implicit_reward, pair_accuracy
from sopo_ray.objectives.registry import objective
from sopo_ray.objectives.sopo import below_tau, dpo_scale, sopo_logit

_DPO_TERMS = ("err_w_theta", "err_w_ref", "err_l_theta", "err_l_ref")
_NEEDED: dict[str, tuple[str, ...]] = {"sft": ("err_w_theta",), "sopo": (*_DPO_TERMS, "reward_l", "beta_w")}


@dataclass
class PreferenceTerms:
    """Per-sample inputs of a preference loss; every tensor is [B], one entry per caption/group.

    Errors are `MotionGenerator.denoise_error` values: masked mean ||target - f(x_t, t, c)||^2 with t and noise
    shared by all four. Only the policy errors may carry gradient. Terms an objective does not use may be None
    (SFT needs only `err_w_theta`; SoPo needs all; the DPO baselines need all but `beta_w`).
    """

    err_w_theta: Tensor
    """[B] policy error on x^w (carries gradient)."""
    err_w_ref: Tensor | None = None
    """[B] reference error on x^w (no gradient; detached here anyway)."""
    err_l_theta: Tensor | None = None
    """[B] policy error on x^l (carries gradient)."""
    err_l_ref: Tensor | None = None
    """[B] reference error on x^l."""
    reward_l: Tensor | None = None
    """[B] r(x^l, c), the reward of the unpreferred sample (SoPo's gate; a metric for the others)."""
    beta_w: Tensor | None = None
    """[B] preferred weight beta_w(x^w) from `preferred_weight` (SoPo only)."""

    def validate(self, name: str) -> None:
        """Raise ValueError if a term objective `name` needs is missing or any present term is not [B]."""
        objective(name)
        missing = [field for field in _NEEDED.get(name, _DPO_TERMS) if getattr(self, field) is None]
        if missing:
            raise ValueError(f"objective '{name}' needs PreferenceTerms.{', '.join(missing)}")
        shape = self.err_w_theta.shape
        for field in ("err_w_theta", "err_w_ref", "err_l_theta", "err_l_ref", "reward_l", "beta_w"):
            value = getattr(self, field)
            if value is not None and (value.ndim != 1 or value.shape != shape):
                raise ValueError(f"PreferenceTerms.{field} must be [B] = {tuple(shape)}, got {tuple(value.shape)}")


def objective_loss(cfg: ObjectiveConfig, terms: PreferenceTerms, tau: float | None = None,
                   num_timesteps: int | None = None) -> tuple[Tensor, dict[str, float]]:
    """Mean loss of objective `cfg.name` over the batch, and its metrics.

    `tau` is the resolved threshold (`sopo.resolve_tau`, needed when `cfg.tau_quantile` or `cfg.tau_gate` is set);
    default `cfg.tau`. `num_timesteps` is T, needed when `cfg.timestep_weight` is "T" (`sopo.dpo_scale`).
    Metrics: `loss`; for the DPO-shaped objectives `logit_mean`, `logit_std` and `sigmoid_mean` of the logit inside
    -log sigmoid (near 0 / 0.5 the loss is linear: weighted SFT plus an unbounded push on x^l), `scale` (T * w_t);
    `err_change_w`, `err_change_l` (mean L(theta, ref, x) on x^w and x^l: policy minus reference error, negative
    when the policy explains the motion better than the reference); `reward_w`, `reward_l` (mean implicit
    rewards -T w_t beta L) and `reward_margin`; `accuracy` (fraction with L^w < L^l); `frac_below_tau` (fraction of
    groups with r(x^l, c) < tau, SoPo's gate); `beta_w`. A metric is present when its inputs are. Non-finite values
    are not masked: a NaN input gives a NaN loss for the trainer to count and skip.
    """
    name = cfg.name
    terms.validate(name)
    if tau is None:
        if cfg.tau_quantile is not None or cfg.tau_gate is not None:
            raise ValueError("objective.tau_quantile/tau_gate is set: pass the resolved tau (sopo.resolve_tau)")
        tau = cfg.tau
    diff_w = dpo_difference(terms.err_w_theta, terms.err_w_ref) if terms.err_w_ref is not None else None
    diff_l = None
    if terms.err_l_theta is not None and terms.err_l_ref is not None:
        diff_l = dpo_difference(terms.err_l_theta, terms.err_l_ref)

    logit = None
    kind = objective(name).loss
    if kind == "sft":
        loss = sft_loss(terms.err_w_theta).mean()
    else:
        scale = dpo_scale(cfg, num_timesteps)
        if kind == "sopo":
            logit = sopo_logit(diff_w, diff_l, terms.reward_l, terms.beta_w, cfg.beta, tau, scale)
        else:
            logit = diffusion_dpo_logit(diff_w, diff_l, cfg.beta, scale)
        loss = -F.logsigmoid(logit).mean()

    metrics: dict[str, float] = {"loss": float(loss.detach())}
    with torch.no_grad():
        if logit is not None:
            metrics.update(logit_mean=float(logit.mean()), logit_std=float(logit.std()) if len(logit) > 1 else 0.0,
                           sigmoid_mean=float(torch.sigmoid(logit).mean()), scale=scale)
        if terms.reward_l is not None:
            metrics["frac_below_tau"] = float(below_tau(terms.reward_l, tau).mean())
            metrics["tau"] = float(tau)
        implicit_scale = (metrics.get("scale", 1.0)) * cfg.beta
        if diff_w is not None:
            metrics["err_change_w"] = float(diff_w.mean())
            metrics["reward_w"] = float(implicit_reward(diff_w, implicit_scale).mean())
        if diff_l is not None:
            metrics["err_change_l"] = float(diff_l.mean())
            metrics["reward_l"] = float(implicit_reward(diff_l, implicit_scale).mean())
        if diff_w is not None and diff_l is not None:
            metrics["reward_margin"] = metrics["reward_w"] - metrics["reward_l"]
            metrics["accuracy"] = float(pair_accuracy(diff_w, diff_l))
        if terms.beta_w is not None:
            metrics["beta_w"] = float(terms.beta_w.mean())
    return loss, metrics
