"""Preference objectives for diffusion models: SoPo (paper Eq. 17) and its baselines, as pure tensor functions.

The learner calls `objective_loss(cfg, PreferenceTerms(...))`; `objective(name)` (registry.py) says which samples
to use and what the trainer runs for them.
"""

from sopo_ray.objectives.baselines import sft_loss
from sopo_ray.objectives.diffusion_dpo import diffusion_dpo_logit, diffusion_dpo_loss, dpo_difference, implicit_reward
from sopo_ray.objectives.loss import PreferenceTerms, objective_loss
from sopo_ray.objectives.registry import OBJECTIVES, Objective, objective, pair_sources
from sopo_ray.objectives.sopo import (
    below_tau,
    dpo_scale,
    preferred_weight,
    resolve_tau,
    sopo_logit,
    sopo_loss,
    tau_from_quantile,
)

__all__ = [
    "OBJECTIVES",
    "Objective",
    "PreferenceTerms",
    "below_tau",
    "diffusion_dpo_logit",
    "diffusion_dpo_loss",
    "dpo_scale",
    "dpo_difference",
    "implicit_reward",
    "objective",
    "objective_loss",
    "pair_sources",
    "preferred_weight",
    "resolve_tau",
    "sft_loss",
    "sopo_logit",
    "sopo_loss",
    "tau_from_quantile",
]
