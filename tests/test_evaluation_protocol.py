"""The evaluation protocol end to end on tiny data: the Real row, a real (untrained) generator, seeding."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from sopo_ray.config import EvaluatorConfig, RewardConfig, load_config
from sopo_ray.errors import DataError
from sopo_ray.evaluation.evaluator import fit_evaluator
from sopo_ray.evaluation.protocol import COLUMNS, evaluate_generator, evaluate_real, generator_source, run_protocol
from sopo_ray.models.generator import build_generator
from sopo_ray.reward.training import fit_reward

torch.set_num_threads(1)
CFG = load_config(None, [
    "data.max_frames=40", "data.min_frames=8", "model.latent_dim=32", "model.num_layers=1", "model.num_heads=2",
    "model.ff_dim=64", "diffusion.num_timesteps=10", "diffusion.sample_steps=2",
    "evaluator.replications=2", "evaluator.num_captions=64", "evaluator.mm_captions=4",
    "evaluator.mm_generations=3", "evaluator.mm_pairs=2", "evaluator.diversity_pairs=50",
])


@pytest.fixture(scope="module")
def models(separable_dataset):
    train, _ = separable_dataset
    evaluator, _ = fit_evaluator(train, None, EvaluatorConfig(latent_dim=16, hidden_dim=32, steps=120, batch_size=32,
                                                              lr=3e-3, margin=3.0), progress=False)
    reward, _ = fit_reward(train, None, RewardConfig(latent_dim=16, num_layers=1, num_heads=2, steps=20,
                                                     batch_size=32), progress=False)
    return evaluator, reward


def test_real_row_has_near_zero_fid_and_high_r_precision(separable_dataset, models) -> None:
    _, val = separable_dataset
    evaluator, reward = models
    row = evaluate_real(evaluator, reward, val, CFG, seed=0)
    assert set(row) == {"R@1", "R@2", "R@3", "FID", "MM-Dist", "Diversity", "Reward"}  # no MM for real data
    assert abs(row["FID"][0]) < 1e-6  # 64 of 64 motions: the very same set as the reference statistics
    assert row["R@3"][0] > 0.5 and row["R@1"][0] <= row["R@2"][0] <= row["R@3"][0]
    assert 0.0 <= row["Reward"][0] <= 1.0
    assert all(ci >= 0 for _, ci in row.values())


def test_generator_row_runs_the_whole_protocol_and_is_seeded(separable_dataset, models) -> None:
    _, val = separable_dataset
    evaluator, reward = models
    gen = build_generator(CFG, val).eval()
    table, reps = run_protocol(generator_source(gen, CFG), evaluator, reward, val, CFG, seed=3)
    assert len(reps) == CFG.evaluator.replications
    assert [k for k in COLUMNS if k in table] == ["R@1", "R@2", "R@3", "FID", "MM-Dist", "Diversity",
                                                  "MultiModality", "Reward"]
    assert all(np.isfinite(v) for pair in table.values() for v in pair)
    real = evaluate_real(evaluator, reward, val, CFG, seed=3)
    assert table["FID"][0] > real["FID"][0] + 1.0  # an untrained generator is far from the data
    again = evaluate_generator(gen, evaluator, reward, val, CFG, seed=3)
    assert again == table  # same seed: same captions, lengths and noises
    other = evaluate_generator(gen, evaluator, reward, val, CFG, seed=4)
    assert other["MM-Dist"] != table["MM-Dist"]


def test_oracle_per_motion_pairs_two_generators_sample_by_sample(tiny_dataset) -> None:
    from sopo_ray.data import load_dataset
    from sopo_ray.evaluation.metrics import paired_difference_ci
    from sopo_ray.evaluation.protocol import oracle_per_motion

    train = load_dataset(tiny_dataset, "train")
    cfg = load_config(None, ["data.max_frames=80", "model.latent_dim=32", "model.num_layers=1", "model.num_heads=2",
                             "model.ff_dim=64", "diffusion.num_timesteps=10", "diffusion.sample_steps=2"])
    a = build_generator(cfg, train).eval()
    b = build_generator(cfg, train).eval()
    with torch.no_grad():                                       # another model: the same one, weights perturbed
        for p in b.parameters():
            p.add_(0.5 * torch.randn_like(p))
    scores = oracle_per_motion(a, train, cfg, seed=0)
    assert scores.shape == (len(train),) and np.all((scores >= 0) & (scores <= 1))
    assert np.array_equal(oracle_per_motion(a, train, cfg, seed=0), scores)        # same seed: same samples
    other = oracle_per_motion(b, train, cfg, seed=0)
    assert not np.array_equal(other, scores)                                        # another model, other motions
    diff, ci = paired_difference_ci(scores, other)
    assert diff == pytest.approx(other.mean() - scores.mean()) and ci > 0
    assert paired_difference_ci(scores, scores) == (0.0, 0.0)
    with pytest.raises(DataError, match="caption parameters"):
        oracle_per_motion(a, dataclasses.replace(train, params=None), cfg)
