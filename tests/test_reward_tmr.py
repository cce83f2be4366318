"""TMR-style reward model: padding never encoded, score range and meaning, negative filtering, training, checkpoints."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from sopo_ray.checkpoint import save_checkpoint
from sopo_ray.config import RewardConfig
from sopo_ray.errors import CheckpointError
from sopo_ray.reward import load_reward
from sopo_ray.reward.tmr import TMRReward
from sopo_ray.reward.training import contrastive_loss, feature_statistics, fit_reward, recall_at, retrieval_metrics

torch.set_num_threads(1)
TINY = RewardConfig(latent_dim=32, num_layers=1, num_heads=2, steps=60, batch_size=32, lr=2e-3, eval_every=60)


def real_motion(humanml3d_sample: Path) -> np.ndarray:
    return np.load(humanml3d_sample / "new_joint_vecs" / "012314.npy")


@pytest.fixture(scope="module")
def model(humanml3d_sample: Path) -> TMRReward:
    x = real_motion(humanml3d_sample)
    torch.manual_seed(0)
    return TMRReward(x.mean(0), x.std(0) + 1e-3, latent_dim=32, num_layers=1, num_heads=2).eval()


@pytest.mark.parametrize("frames_per_token", [1, 3])
def test_padding_frames_are_never_encoded(frames_per_token: int, humanml3d_sample: Path) -> None:
    x = real_motion(humanml3d_sample)
    torch.manual_seed(0)
    model = TMRReward(x.mean(0), x.std(0) + 1e-3, latent_dim=32, num_layers=1, num_heads=2,
                      frames_per_token=frames_per_token).eval()
    padded = np.zeros((2, 200, 263), np.float32)
    padded[:, :170] = x
    padded[1, 170:] = np.nan  # garbage past the length must not reach the embedding
    padded[1, 170:, :4] = 1e6
    with torch.no_grad():
        z = model.encode_motion(padded, [170, 170])
        alone = model.encode_motion(x[None], [170])
        short = model.encode_motion(padded, [101, 101])
        short_alone = model.encode_motion(x[None, :101], [101])
    assert torch.isfinite(z).all()
    torch.testing.assert_close(z[0], z[1])
    torch.testing.assert_close(z[:1], alone, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(short[:1], short_alone, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(short[0], z[0])  # the length matters


def test_score_is_cosine_mapped_to_unit_interval(model: TMRReward, humanml3d_sample: Path) -> None:
    x = real_motion(humanml3d_sample)[None].repeat(3, 0)
    captions = ["a person serves a tennis ball", "someone walks in a circle", "a man jumps twice"]
    scores = model.score(x, [170, 120, 60], captions)
    assert scores.shape == (3,) and torch.all((scores >= 0) & (scores <= 1))
    with torch.no_grad():
        cos = (model.encode_motion(x, [170, 120, 60]) * model.encode_text(captions)).sum(-1)
    torch.testing.assert_close(scores, (cos + 1) / 2)
    same = model.motion_similarity(x, [170, 120, 60], x, [170, 120, 60])
    torch.testing.assert_close(same, torch.ones(3), atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="lengths"):
        model.score(x, [171, 10, 10], captions)


def test_negative_filter_removes_near_duplicate_captions_from_the_loss() -> None:
    torch.manual_seed(0)
    z_t = torch.nn.functional.normalize(torch.randn(4, 8), dim=-1)
    z_m = torch.nn.functional.normalize(torch.randn(4, 8), dim=-1)
    distinct = torch.eye(4, dtype=torch.bool)     # no two captions share their text
    sent = torch.eye(4)
    sent[1] = sent[0]  # the sentence embeddings of captions 0 and 1 are identical: similarity 1
    filtered = contrastive_loss(z_t, z_m, distinct, 0.1, sent, negative_filter=0.8)
    unfiltered = contrastive_loss(z_t, z_m, distinct, 0.1, sent, negative_filter=1.0)
    logits = z_t @ z_m.T / 0.1
    target = torch.arange(4)
    ce = torch.nn.functional.cross_entropy
    torch.testing.assert_close(unfiltered, (ce(logits, target) + ce(logits.T, target)) / 2)
    logits[0, 1] = logits[1, 0] = float("-inf")
    by_hand = (ce(logits, target) + ce(logits.T, target)) / 2
    torch.testing.assert_close(filtered, by_hand)
    assert not torch.allclose(filtered, unfiltered)
    same_text = distinct.clone()
    same_text[0, 1] = same_text[1, 0] = True      # the same pair as equal caption text: not a negative either
    torch.testing.assert_close(contrastive_loss(z_t, z_m, same_text, 0.1), by_hand)
    all_same = torch.ones(4, 8)
    assert float(contrastive_loss(z_t, z_m, distinct, 0.1, all_same, 0.8)) == pytest.approx(0.0, abs=1e-6)


def test_feature_statistics_ignore_padding() -> None:
    x = np.zeros((2, 5, 3), np.float32)
    x[0, :2] = [[1, 2, 5], [3, 2, 5]]
    x[1, :1] = [[2, 2, 5]]
    x[1, 1:] = 99.0  # past the length
    mean, std = feature_statistics(x, np.array([2, 1]))
    np.testing.assert_allclose(mean, [2, 2, 5], atol=1e-6)
    np.testing.assert_allclose(std, [np.sqrt(2 / 3), 1.0, 1.0], atol=1e-6)  # constant dims get std 1


def test_recall_counts_ties_as_misses() -> None:
    sim = torch.tensor([[0.9, 0.1, 0.0], [0.5, 0.5, 0.0], [0.0, 0.8, 0.7]])
    assert recall_at(sim, (1, 2)) == {1: pytest.approx(1 / 3), 2: pytest.approx(1.0)}


def test_training_learns_retrieval_and_checkpoint_round_trips(separable_dataset, tmp_path: Path) -> None:
    train, val = separable_dataset
    model, metrics = fit_reward(train, val, TINY, progress=False)
    # chance: 1/32 and 5/32; each of the 16 caption kinds has ~2 motions per batch of 32, so R@1 tops out near 0.5
    assert metrics["retrieval/b32_R@1"] > 0.3 and metrics["retrieval/b32_R@5"] > 0.9
    # a motion whose caption is the query's paraphrase counts in `all_thr`: never below `all`
    assert metrics["retrieval/all_thr_R@1"] >= metrics["retrieval/all_R@1"]
    assert metrics["retrieval/all_thr_R@1"] > 0.8
    path = save_checkpoint(tmp_path / "reward.pt", "reward", model.state_dict(), {}, train.data_id, arch=model.arch)
    loaded = load_reward(path, train.data_id)
    captions = [c[0] for c in val.captions[:8]]
    torch.testing.assert_close(loaded.score(val.features[:8], val.lengths[:8], captions),
                               model.score(val.features[:8], val.lengths[:8], captions))
    assert retrieval_metrics(loaded, val) == pytest.approx({k: v for k, v in metrics.items()
                                                            if k.startswith("retrieval/")})
    with pytest.raises(CheckpointError, match="dataset"):
        load_reward(path, "another-dataset")
    with pytest.raises(CheckpointError, match="'evaluator'"):
        load_reward(save_checkpoint(tmp_path / "e.pt", "evaluator", {}, {}), None)
