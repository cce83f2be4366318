"""The caption oracle: 1.0 on the generator's own motions, low on mismatched pairs, robust to noise."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.interpolate import interp1d

from sopo_ray.config import DataConfig
from sopo_ray.data import oracle_score
from sopo_ray.data.synthetic.build import make_motion, synthesize
from sopo_ray.data.synthetic.space import ACTIONS
from sopo_ray.errors import DataError
from sopo_ray.motion.features import features_to_joints, joints_to_features

CFG = DataConfig(max_frames=120)


@pytest.fixture(scope="module")
def motions() -> list[dict]:
    return [make_motion(CFG, i) for i in range(80)]


def _single(action: str, frames: int = 90, seed: int = 0, **attributes) -> tuple[np.ndarray, dict]:
    params = {"segments": [{"action": action, **attributes}], "fractions": [1.0]}
    return joints_to_features(synthesize(params, frames, np.random.default_rng(seed))), params


def test_own_motions_score_one(motions):
    results = [oracle_score(m["features"], m["params"]) for m in motions]
    scores = np.array([r.score for r in results])
    assert scores.mean() >= 0.98 and scores.min() >= 0.75
    for r in results:
        assert set(r.clauses) == set(r.values) and all(isinstance(v, bool) for v in r.clauses.values())


@pytest.mark.parametrize("action", sorted(ACTIONS))
def test_every_action_and_attribute_value_is_recognised(action):
    spec = ACTIONS[action]
    choices = [dict()]
    for name, values in spec.attributes:
        choices = [dict(c, **{name: v}) for c in choices for v in values]
    for seed, attributes in enumerate(choices):
        features, params = _single(action, seed=seed, **attributes)
        result = oracle_score(features, params)
        assert result.score == 1.0, (params, result.values)


def test_mismatched_pairs_score_low(motions):
    rng = np.random.default_rng(0)
    order = rng.permutation(len(motions))
    pairs = [(i, j) for i, j in enumerate(order) if motions[i]["params"] != motions[j]["params"]]
    scores = [oracle_score(motions[i]["features"], motions[j]["params"]).score for i, j in pairs]
    assert np.mean(scores) < 0.5


@pytest.mark.parametrize(("action", "done", "asked", "failing"), [
    ("walk", {"direction": "forward", "speed": "normal"}, {"direction": "backward", "speed": "normal"}, "direction"),
    ("walk", {"direction": "forward", "speed": "slow"}, {"direction": "forward", "speed": "fast"}, "speed"),
    ("run", {"direction": "forward"}, {"direction": "left"}, "curve"),
    ("turn", {"direction": "left", "angle": 90}, {"direction": "right", "angle": 90}, "direction"),
    ("turn", {"direction": "left", "angle": 90}, {"direction": "left", "angle": 180}, "angle"),
    ("wave", {"hand": "left"}, {"hand": "right"}, "hand_up"),
    ("raise", {"hand": "right", "count": 2}, {"hand": "right", "count": 3}, "count"),
    ("raise", {"hand": "both", "count": 1}, {"hand": "left", "count": 1}, "other_hand_down"),
    ("clap", {"count": 2}, {"count": 4}, "count"),
    ("punch", {"hand": "left", "count": 1}, {"hand": "right", "count": 1}, "count"),
    ("squat", {"count": 1}, {"count": 2}, "count"),
    ("jump", {"direction": "in_place", "count": 1}, {"direction": "forward", "count": 1}, "direction"),
    ("kick", {"leg": "left", "count": 1}, {"leg": "right", "count": 1}, "count"),
    ("sidestep", {"direction": "left"}, {"direction": "right"}, "direction"),
])
def test_a_wrong_attribute_fails_its_clause(action, done, asked, failing):
    features, _ = _single(action, **done)
    asked_params = {"segments": [{"action": action, **asked}], "fractions": [1.0]}
    result = oracle_score(features, asked_params)
    assert result.clauses[f"0:{action}.{failing}"] is False
    assert result.score < 1.0


def test_kneel_sit_and_squat_are_told_apart():
    kneel, kneel_params = _single("kneel")
    sit, sit_params = _single("sit")
    assert oracle_score(kneel, sit_params).score < 0.6
    assert oracle_score(sit, kneel_params).score < 0.6
    squat, squat_params = _single("squat", count=1)
    assert oracle_score(squat, sit_params).score < 0.6


def test_sequence_order_matters():
    params = {"segments": [{"action": "walk", "direction": "forward", "speed": "normal"},
                           {"action": "wave", "hand": "right"}], "fractions": [0.5, 0.5]}
    features = joints_to_features(synthesize(params, 110, np.random.default_rng(1)))
    assert oracle_score(features, params).score == 1.0
    swapped = {"segments": params["segments"][::-1], "fractions": [0.5, 0.5]}
    assert oracle_score(features, swapped).score <= 0.5


def test_joints_and_features_give_the_same_verdict(motions):
    for m in motions[:10]:
        from_features = oracle_score(m["features"], m["params"])
        from_joints = oracle_score(features_to_joints(m["features"]), m["params"])
        assert from_features.clauses == from_joints.clauses


def test_robust_to_noise_and_timing(motions):
    rng = np.random.default_rng(0)
    noisy, warped = [], []
    for m in motions[:40]:
        f = m["features"]
        jitter = rng.normal(size=f.shape).astype(np.float32) * 0.1 * f.std(0, keepdims=True)
        noisy.append(oracle_score(f + jitter, m["params"]).score)
        joints = features_to_joints(f)
        n = int(round(len(joints) * 0.85))
        warped.append(oracle_score(interp1d(np.linspace(0, 1, len(joints)), joints, axis=0)(np.linspace(0, 1, n)),
                                   m["params"]).score)
    assert np.mean(noisy) >= 0.95 and np.mean(warped) >= 0.95


def test_bad_inputs():
    with pytest.raises(DataError, match="features"):
        oracle_score(np.zeros((10, 100)), {"segments": [], "fractions": []})
    broken = np.full((20, 22, 3), np.nan)
    result = oracle_score(broken, {"segments": [{"action": "sit"}], "fractions": [1.0]})
    assert result.score == 0.0
