"""The T2M metrics on small hand-computed cases."""

from __future__ import annotations

import numpy as np
import pytest

from sopo_ray.evaluation import metrics


def _rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


def test_distance_matrix_matches_direct_norms():
    a, b = _rng().normal(size=(5, 3)), _rng(1).normal(size=(4, 3))
    direct = np.linalg.norm(a[:, None] - b[None], axis=-1)
    np.testing.assert_allclose(metrics.euclidean_distance_matrix(a, b), direct, atol=1e-10)


def test_r_precision_of_a_perfect_encoder_is_one():
    emb = _rng().normal(size=(64, 8))
    np.testing.assert_allclose(metrics.r_precision(emb, emb.copy(), pool=32), [1.0, 1.0, 1.0])


def test_r_precision_of_a_constant_encoder_is_zero():
    emb = np.ones((32, 4))
    np.testing.assert_allclose(metrics.r_precision(emb, emb, pool=32), [0.0, 0.0, 0.0])


def test_r_precision_counts_ranks_by_hand():
    # pool of 4 on a line; text i sits at motion i's position except text 0, which sits closest to motion 1,
    # then motion 0 (rank 2), so top-1 misses it and top-2 finds it.
    motions = np.array([[0.0], [1.0], [2.0], [3.0]])
    texts = np.array([[0.9], [1.0], [2.0], [3.0]])
    np.testing.assert_allclose(metrics.r_precision(texts, motions, pool=4, top_k=3), [0.75, 1.0, 1.0])


def test_r_precision_drops_the_incomplete_last_batch_and_rejects_too_few():
    emb = _rng().normal(size=(40, 4))
    shuffled = emb[::-1].copy()
    shuffled[:32] = emb[:32]  # first batch perfect, the 8 leftover pairs (mismatched) must be ignored
    np.testing.assert_allclose(metrics.r_precision(emb, shuffled, pool=32)[0], 1.0)
    with pytest.raises(ValueError, match="full batch"):
        metrics.r_precision(emb[:10], emb[:10], pool=32)


def test_fid_of_identical_sets_is_zero_and_of_a_shift_is_the_squared_shift():
    x = _rng().normal(size=(500, 6))
    assert abs(metrics.fid(x, x)) < 1e-6
    assert metrics.fid(x, x + 2.0) == pytest.approx(6 * 4.0, rel=1e-6)


def test_frechet_distance_of_gaussians_by_hand():
    # 1-D: (mu1 - mu2)^2 + s1 + s2 - 2 sqrt(s1 s2) = 1 + 4 + 1 - 2*2 = 2
    assert metrics.frechet_distance(np.array([0.0]), np.array([[4.0]]), np.array([1.0]), np.array([[1.0]])) \
        == pytest.approx(2.0)


def test_mm_dist_is_mean_pair_distance():
    texts = np.array([[0.0, 0.0], [1.0, 1.0]])
    motions = np.array([[3.0, 4.0], [1.0, 2.0]])
    assert metrics.mm_dist(texts, motions) == pytest.approx((5.0 + 1.0) / 2)


def test_diversity_of_identical_is_zero_and_of_two_points_is_bounded():
    assert metrics.diversity(np.ones((300, 4)), 300, _rng()) == 0.0
    pts = np.array([[0.0], [10.0]] * 150)
    div = metrics.diversity(pts, 300, _rng())
    assert 0.0 < div < 10.0  # some pairs are (a, a), some (a, b)
    with pytest.raises(ValueError, match="without replacement"):
        metrics.diversity(np.ones((10, 2)), 300, _rng())


def test_diversity_draws_without_replacement_so_all_pairs_cover_every_point():
    # with num_pairs == N both sides are permutations: each point appears exactly once per side
    pts = np.arange(4, dtype=float)[:, None]
    values = {metrics.diversity(pts, 4, _rng(s)) for s in range(20)}
    assert all(0.0 <= v <= 2.5 for v in values) and len(values) > 1


def test_multimodality_zero_for_identical_generations_and_per_caption_only():
    same = np.repeat(_rng().normal(size=(5, 1, 3)), 10, axis=1)
    assert metrics.multimodality(same, 10, _rng()) == 0.0
    # two captions far apart, each with two generations 1.0 apart: MM only pairs within a caption
    emb = np.array([[[0.0], [1.0]], [[100.0], [101.0]]])
    mm = metrics.multimodality(emb, 2, _rng())
    assert 0.0 <= mm <= 1.0
    with pytest.raises(ValueError):
        metrics.multimodality(emb, 3, _rng())


def test_mean_ci_uses_population_std():
    mean, ci = metrics.mean_ci([1.0, 3.0])
    assert mean == 2.0
    assert ci == pytest.approx(1.96 * 1.0 / np.sqrt(2))
    assert metrics.mean_ci([5.0]) == (5.0, 0.0)


def test_paired_difference_ci_by_hand_and_bad_shapes():
    a, b = np.array([0.0, 1.0, 0.5, 0.5]), np.array([0.5, 1.0, 1.0, 0.5])
    d = b - a                                                   # 0.5, 0, 0.5, 0: mean 0.25, sample std 0.2887
    mean, ci = metrics.paired_difference_ci(a, b)
    assert mean == pytest.approx(0.25) and ci == pytest.approx(1.96 * np.std(d, ddof=1) / 2)
    shifted = metrics.paired_difference_ci(a + 0.3, b + 0.3)    # what both share cancels
    assert shifted == pytest.approx((mean, ci))
    for bad in ((a, b[:3]), (a[:1], b[:1]), (a.reshape(2, 2), b.reshape(2, 2))):
        with pytest.raises(ValueError, match="paired scores"):
            metrics.paired_difference_ci(*bad)


def test_sample_mean_ci_has_no_interval_below_two_samples():
    from sopo_ray.evaluation.metrics import sample_mean_ci

    mean, half = sample_mean_ci(np.array([0.25, 0.75]))
    assert mean == pytest.approx(0.5) and half == pytest.approx(1.96 * np.std([0.25, 0.75], ddof=1) / np.sqrt(2))
    one = sample_mean_ci(np.array([0.4]))
    assert one[0] == pytest.approx(0.4) and np.isnan(one[1])
    assert all(np.isnan(v) for v in sample_mean_ci(np.array([])))
