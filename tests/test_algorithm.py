"""The Ray-free core (`sopo_ray.algorithm`): the pair pick, the step's forward pass that the Ray Train learner and
the local loop share, and one optimizer step."""

from __future__ import annotations

import copy

import numpy as np
import torch

from sopo_ray.algorithm import PolicyErrors, PreferenceBatch, pick_pairs, preference_terms
from sopo_ray.config import load_config
from sopo_ray.models.generator import build_generator
from sopo_ray.objectives import objective_loss

torch.set_num_threads(1)
TINY = ["data.max_frames=24", "data.min_frames=8", "model.latent_dim=32", "model.num_layers=2", "model.num_heads=2",
        "model.ff_dim=64", "model.frames_per_token=1", "diffusion.num_timesteps=20", "diffusion.sample_steps=5",
        "model.cond_drop_prob=0.25"]


def _setup():
    cfg = load_config(None, TINY)
    rng = np.random.default_rng(0)
    policy = build_generator(cfg, (rng.normal(size=263).astype(np.float32), rng.uniform(0.5, 2, 263))).eval()
    reference = copy.deepcopy(policy).requires_grad_(False)
    g = torch.Generator().manual_seed(1)
    batch = PreferenceBatch(
        captions=["a person walks forward", "someone jumps", "a person waves", "someone kicks"],
        x_w=torch.randn(4, 24, 263, generator=g), len_w=torch.tensor([24, 20, 16, 12]),
        x_l=torch.randn(4, 24, 263, generator=g), len_l=torch.tensor([24, 20, 16, 12]),
        reward_l=torch.tensor([0.2, 0.4, 0.6, 0.8]), sims_w=torch.rand(4, 2, generator=g), staleness=[0, 0, 0, 0],
        group_metrics={})
    return cfg, policy, reference, batch


def _terms(cfg, policy, reference, batch, seed):
    return preference_terms(cfg, PolicyErrors(policy), policy, reference, batch, torch.Generator().manual_seed(seed),
                            "cpu")


def test_policy_and_reference_see_the_same_t_noise_and_dropout():
    cfg, policy, reference, batch = _setup()
    terms = _terms(cfg, policy, reference, batch, seed=3)
    # identical weights: equal errors only if both models were evaluated at the same (t, noise, keep) per pair
    torch.testing.assert_close(terms.err_w_theta.detach(), terms.err_w_ref)
    torch.testing.assert_close(terms.err_l_theta.detach(), terms.err_l_ref)
    assert terms.err_w_theta.requires_grad and terms.err_l_theta.requires_grad
    assert not terms.err_w_ref.requires_grad and not terms.err_l_ref.requires_grad
    torch.testing.assert_close(terms.reward_l, batch.reward_l)


def test_the_generator_fixes_the_step_and_only_the_policy_gets_gradients():
    cfg, policy, reference, batch = _setup()
    same = [_terms(cfg, policy, reference, batch, seed=5).err_w_theta.detach() for _ in range(2)]
    other = _terms(cfg, policy, reference, batch, seed=6).err_w_theta.detach()
    torch.testing.assert_close(same[0], same[1])
    assert not torch.allclose(same[0], other)
    loss, _ = objective_loss(cfg.objective, _terms(cfg, policy, reference, batch, seed=5), cfg.objective.tau,
                             policy.num_timesteps)
    loss.backward()
    grads = [p.grad for p in policy.denoiser.parameters() if p.requires_grad]
    assert grads and any(g is not None and g.abs().sum() > 0 for g in grads)
    assert all(p.grad is None for p in reference.parameters())


def test_pick_pairs_never_picks_a_nan_while_a_finite_reward_exists():
    best, worst = pick_pairs(np.array([[0.2, np.nan, 0.9], [np.nan, np.inf, 0.5], [np.nan, np.nan, np.nan]]))
    assert best.tolist() == [2, 2, 0] and worst.tolist() == [0, 2, 0]


def test_pick_pairs_ties_go_to_the_first_index():
    best, worst = pick_pairs(np.array([[0.3, 0.3, 0.8], [0.1, 0.5, 0.1]]))
    assert best.tolist() == [2, 1] and worst.tolist() == [0, 0]
