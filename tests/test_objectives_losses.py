"""SoPo and baseline losses against hand-computed values, the tau gate, and the interface's contracts."""

from __future__ import annotations

import math
import typing

import pytest
import torch

from sopo_ray.config import ObjectiveConfig
from sopo_ray.errors import ConfigError, DataError
from sopo_ray.objectives import (
    PreferenceTerms,
    below_tau,
    objective_loss,
    pair_sources,
    preferred_weight,
    resolve_tau,
    tau_from_quantile,
)


def softplus(z: float) -> float:
    """-log sigmoid(-z) = log(1 + exp(z)), written out."""
    return math.log(1.0 + math.exp(z))


def t(*values: float) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float64)


# L^w = err_w_theta - err_w_ref = [-0.2, 0.1];  L^l = err_l_theta - err_l_ref = [0.3, -0.1]
TERMS = dict(err_w_theta=t(0.5, 0.2), err_w_ref=t(0.7, 0.1), err_l_theta=t(0.9, 0.3), err_l_ref=t(0.6, 0.4))


def test_dpo_baselines_match_hand_computed_value():
    for name in ("online_dpo", "offline_dpo"):
        cfg = ObjectiveConfig(name=name, beta=1.5, timestep_weight=2.0)
        loss, metrics = objective_loss(cfg, PreferenceTerms(**TERMS, reward_l=t(0.3, 0.6)))
        # logit = -T w_t beta (L^w - L^l) = -3 * [-0.5, 0.2] = [1.5, -0.6]; loss = log(1 + exp(-logit))
        expected = (softplus(-1.5) + softplus(0.6)) / 2
        assert loss.item() == pytest.approx(expected, rel=1e-12)
        assert metrics["loss"] == pytest.approx(expected, rel=1e-12)
        assert metrics["reward_w"] == pytest.approx(-3.0 * (-0.2 + 0.1) / 2)   # 0.15
        assert metrics["reward_l"] == pytest.approx(-3.0 * (0.3 - 0.1) / 2)    # -0.3
        assert metrics["reward_margin"] == pytest.approx(0.45)
        assert metrics["accuracy"] == pytest.approx(0.5)                          # only pair 0 has L^w < L^l
        assert metrics["frac_below_tau"] == pytest.approx(0.5)


def test_sopo_matches_hand_computed_value_both_branches():
    cfg = ObjectiveConfig(name="sopo", beta=1.5, timestep_weight=2.0, tau=0.45)
    terms = PreferenceTerms(**TERMS, reward_l=t(0.3, 0.6), beta_w=t(1.2, 1.7))
    loss, metrics = objective_loss(cfg, terms)
    # pair 0, r = 0.3 < tau: logit = -2 * (1.2 * -0.2 - 1.5 * 0.3) = 1.38
    # pair 1, r = 0.6 >= tau: logit = -2 * (1.7 * 0.1) = -0.34 (x^l term dropped)
    expected = (softplus(-1.38) + softplus(0.34)) / 2
    assert loss.item() == pytest.approx(expected, rel=1e-12)
    assert metrics["frac_below_tau"] == pytest.approx(0.5)
    assert metrics["beta_w"] == pytest.approx(1.45)
    assert metrics["tau"] == pytest.approx(0.45)


def test_sft_is_mean_policy_error_and_ignores_x_l():
    cfg = ObjectiveConfig(name="sft")
    alone, _ = objective_loss(cfg, PreferenceTerms(err_w_theta=t(0.5, 0.2)))
    assert alone.item() == pytest.approx(0.35)
    other_l = dict(TERMS, err_l_theta=t(50.0, -3.0), err_l_ref=t(0.0, 9.0))
    with_l, metrics = objective_loss(cfg, PreferenceTerms(**other_l, reward_l=t(0.0, 0.0)))
    assert with_l.item() == pytest.approx(0.35)
    assert metrics["reward_margin"] == pytest.approx(metrics["reward_w"] - metrics["reward_l"])


def test_tau_branch_switches_exactly_at_threshold():
    tau = 0.45
    just_below = math.nextafter(tau, -math.inf)
    assert below_tau(t(tau, just_below, 1.0, 0.0), tau).tolist() == [0.0, 1.0, 0.0, 1.0]
    as_f32 = torch.tensor([tau], dtype=torch.float32)
    assert below_tau(as_f32, float(as_f32)).item() == 0.0

    cfg = ObjectiveConfig(name="sopo", tau=tau, timestep_weight=1.0)
    beta_w = t(1.0, 1.0)
    at = objective_loss(cfg, PreferenceTerms(**TERMS, reward_l=t(tau, tau), beta_w=beta_w))[0]
    below = objective_loss(cfg, PreferenceTerms(**TERMS, reward_l=t(just_below, just_below), beta_w=beta_w))[0]
    w_only = (softplus(-0.2) + softplus(0.1)) / 2          # logit = -(1.0 * L^w)
    with_l = (softplus(-0.5) + softplus(0.2)) / 2          # logit = -(L^w - L^l)
    assert at.item() == pytest.approx(w_only, rel=1e-12)
    assert below.item() == pytest.approx(with_l, rel=1e-12)


def test_sopo_equals_dpo_when_every_group_is_below_tau():
    gen = torch.Generator().manual_seed(0)
    errs = {k: torch.rand(16, generator=gen, dtype=torch.float64) for k in TERMS}
    sims = torch.rand(16, 3, generator=gen, dtype=torch.float64)
    sopo_cfg = ObjectiveConfig(name="sopo", beta=0.7, beta_w="constant", timestep_weight=5.0, tau=0.5)
    dpo_cfg = ObjectiveConfig(name="online_dpo", beta=0.7, timestep_weight=5.0)
    rewards = 0.49 * torch.rand(16, generator=gen, dtype=torch.float64)
    sopo, _ = objective_loss(sopo_cfg, PreferenceTerms(**errs, reward_l=rewards,
                                                        beta_w=preferred_weight(sopo_cfg, sims)))
    dpo, _ = objective_loss(dpo_cfg, PreferenceTerms(**errs, reward_l=rewards))
    assert sopo.item() == pytest.approx(dpo.item(), rel=1e-12)


def test_preferred_weight_similarity_and_constant():
    sims = t(0.9, 0.4, 0.7, 0.2, 0.3, 0.95).reshape(2, 3)
    cfg = ObjectiveConfig(beta=1.5, beta_w_c=2.0)
    assert preferred_weight(cfg, sims).tolist() == pytest.approx([1.5 * (2 - 0.4), 1.5 * (2 - 0.2)])
    const = ObjectiveConfig(beta=1.5, beta_w="constant")
    assert preferred_weight(const, sims).tolist() == [1.5, 1.5]
    with pytest.raises(ValueError, match=r"\[B, K\]"):
        preferred_weight(cfg, t(0.1, 0.2))


def test_tau_from_quantile_and_resolve():
    rewards = t(0.5, 0.1, 0.4, 0.2, 0.3)
    assert tau_from_quantile(rewards, 0.25) == pytest.approx(0.2)
    assert tau_from_quantile(rewards.numpy(), 0.1) == pytest.approx(0.1 + 0.4 * 0.1)   # linear interpolation
    assert resolve_tau(ObjectiveConfig(tau=0.3)) == 0.3
    assert resolve_tau(ObjectiveConfig(tau_quantile=0.25), rewards) == pytest.approx(0.2)
    with pytest.raises(ConfigError, match="tau_quantile"):
        resolve_tau(ObjectiveConfig(tau_quantile=0.25))
    with pytest.raises(DataError, match="NaN"):
        tau_from_quantile(t(0.1, math.nan), 0.5)
    with pytest.raises(DataError, match="zero rewards"):
        tau_from_quantile(t(), 0.5)
    with pytest.raises(ValueError, match="resolved tau"):
        objective_loss(ObjectiveConfig(tau_quantile=0.2), PreferenceTerms(**TERMS, reward_l=t(0.1, 0.1),
                                                                         beta_w=t(1.0, 1.0)))


def test_non_finite_inputs_reach_the_loss():
    cfg = ObjectiveConfig(name="sopo", timestep_weight=1.0)
    nan_reward = PreferenceTerms(**TERMS, reward_l=t(math.nan, 0.1), beta_w=t(1.0, 1.0))
    assert math.isnan(objective_loss(cfg, nan_reward)[0].item())
    gated_off_nan = dict(TERMS, err_l_theta=t(math.nan, 0.3))
    loss, _ = objective_loss(cfg, PreferenceTerms(**gated_off_nan, reward_l=t(0.9, 0.9), beta_w=t(1.0, 1.0)))
    assert math.isnan(loss.item())


def test_pair_sources_cover_every_configurable_objective():
    names = typing.get_args(ObjectiveConfig.model_fields["name"].annotation)
    assert set(names) == {"sopo", "online_dpo", "offline_dpo", "sft"}
    assert pair_sources("sopo") == ("dataset", "worst_sample")
    assert pair_sources("online_dpo") == ("best_sample", "worst_sample")
    assert pair_sources("offline_dpo") == ("offline_pair", "offline_pair")
    assert pair_sources("sft") == ("dataset", None)
    with pytest.raises(ValueError, match="unknown objective"):
        pair_sources("ppo")


def test_validate_names_missing_and_misshaped_terms():
    with pytest.raises(ValueError, match="beta_w"):
        objective_loss(ObjectiveConfig(name="sopo"), PreferenceTerms(**TERMS, reward_l=t(0.1, 0.1)))
    with pytest.raises(ValueError, match="err_l_ref"):
        objective_loss(ObjectiveConfig(name="online_dpo"),
                       PreferenceTerms(err_w_theta=t(1.0), err_w_ref=t(1.0), err_l_theta=t(1.0)))
    with pytest.raises(ValueError, match=r"reward_l must be \[B\]"):
        objective_loss(ObjectiveConfig(name="offline_dpo"), PreferenceTerms(**TERMS, reward_l=t(0.1)))


def test_the_dpo_scale_is_T_by_default_and_is_logged_with_the_logit():
    terms = PreferenceTerms(**TERMS, reward_l=t(0.3, 0.6), beta_w=t(1.2, 1.7))
    with pytest.raises(ValueError, match="num_timesteps"):
        objective_loss(ObjectiveConfig(name="sopo", tau=0.45), terms)
    loss, metrics = objective_loss(ObjectiveConfig(name="sopo", beta=1.5, tau=0.45), terms, num_timesteps=50)
    # the hand-computed logits of test_sopo_matches_hand_computed_value_both_branches, at T * w_t = 50 instead of 2
    logits = [1.38 * 25, -0.34 * 25]
    assert loss.item() == pytest.approx((softplus(-logits[0]) + softplus(-logits[1])) / 2, rel=1e-9)
    assert metrics["scale"] == 50.0
    assert metrics["logit_mean"] == pytest.approx(sum(logits) / 2)
    assert metrics["logit_std"] == pytest.approx(torch.tensor(logits).std().item())
    assert metrics["sigmoid_mean"] == pytest.approx(sum(1 / (1 + math.exp(-z)) for z in logits) / 2)
    assert metrics["err_change_w"] == pytest.approx((-0.2 + 0.1) / 2)     # L^w: policy minus reference error
    assert metrics["err_change_l"] == pytest.approx((0.3 - 0.1) / 2)
    assert ObjectiveConfig(timestep_weight=7.0).timestep_weight == 7.0


@pytest.mark.parametrize("bad", [0, -1.0, float("nan"), float("inf"), "T50", "t"])
def test_bad_dpo_scales_are_refused(bad):
    with pytest.raises(ValueError, match="timestep_weight"):
        ObjectiveConfig(timestep_weight=bad)


def test_tau_gate_and_tau_quantile_exclude_each_other():
    with pytest.raises(ValueError, match="at most one"):
        ObjectiveConfig(tau_gate=0.3, tau_quantile=0.2)
    for bad in (0.0, 1.0, 1.5):
        with pytest.raises(ValueError):
            ObjectiveConfig(tau_gate=bad)
