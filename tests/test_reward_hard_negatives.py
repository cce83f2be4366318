"""Hard negatives made from (text, motion) pairs alone: counterfactual captions and corrupted motions."""

from __future__ import annotations

import numpy as np
import pytest

from sopo_ray.data import load_dataset
from sopo_ray.motion.features import root_trajectory
from sopo_ray.reward.hard_negatives import CORRUPTIONS, corrupt, counterfactuals, hold_pad, reorderings
from sopo_ray.reward.training import pad_lengths


@pytest.mark.parametrize(("caption", "expected"), [
    ("a person claps twice", {"a person claps once", "a person claps three times", "a person claps four times"}),
    ("someone walks forward slowly", {"someone walks backward slowly", "someone walks forward quickly"}),
    ("a man turns 90 degrees to the left", {"a man turns 180 degrees to the left",
                                            "a man turns 90 degrees to the right"}),
    ("A person waves the Left hand", {"A person waves the Right hand"}),
])
def test_counterfactuals_change_one_attribute_word(caption, expected):
    got = set(counterfactuals(caption))
    assert expected <= got and caption not in got


def test_a_caption_without_attribute_words_has_no_counterfactual():
    assert counterfactuals("a person sits down") == [] and counterfactuals("someone kneels") == []


@pytest.mark.parametrize(("caption", "expected"), [
    ("a person waves, then jumps.", ["a person jumps, then waves."]),
    ("the person runs ahead fast, after that she backs up", ["the person backs up, after that she runs ahead fast"]),
    ("Someone walks then runs", ["Someone runs then walks"]),
    ("a man first jogs forward, then waves with the left hand, and finally squats once.",
     ["a man first waves with the left hand, then jogs forward, and finally squats once.",
      "a man first jogs forward, then squats once, and finally waves with the left hand."]),
])
def test_reorderings_swap_two_neighbouring_actions_and_keep_the_rest(caption, expected):
    assert reorderings(caption) == expected


@pytest.mark.parametrize("caption", ["a person jumps twice", "a person walks forward and waves", "walks, then jumps",
                                     "a person waves then waves", ""])
def test_a_caption_of_one_action_no_subject_or_one_repeated_action_has_no_reordering(caption):
    assert reorderings(caption) == []


def test_order_negatives_join_each_sequence_captions_hard_negatives(tiny_dataset):
    from sopo_ray.config import RewardConfig
    from sopo_ray.reward.tmr import TMRReward
    from sopo_ray.reward.training import TrainingPairs

    train = load_dataset(tiny_dataset, "train")
    model = TMRReward(train.mean, train.std, latent_dim=16, num_heads=2)
    cfg = RewardConfig(counterfactual_negatives=False, mirror=False)
    assert TrainingPairs(train, cfg, model).hard_ids == {}
    pairs = TrainingPairs(train, cfg.model_copy(update={"order_negatives": True}), model)
    sequences = [c for caps in train.captions for c in caps if reorderings(c)]
    assert sequences, "the tiny dataset has captions of several actions"
    for c in sequences:
        ids = pairs.hard_ids[pairs.texts.index(c)]
        assert [pairs.texts[i] for i in ids] == reorderings(c)


@pytest.fixture(scope="module")
def motion(tiny_dataset):
    data = load_dataset(tiny_dataset, "train")
    return data.features[0], int(data.lengths[0])


def test_drift_moves_the_whole_body_and_keeps_the_pose(motion):
    x, n = motion
    broken = corrupt(x, n, "drift", np.random.default_rng(0))
    _, root = root_trajectory(x[:n].astype(np.float64))
    _, moved = root_trajectory(broken[:n].astype(np.float64))
    travelled = np.linalg.norm((moved - root)[-1, [0, 2]])
    assert 0.5 / 20 * (n - 1) * 0.99 <= travelled <= 1.5 / 20 * (n - 1) * 1.01   # 0.5-1.5 m/s for the whole clip
    np.testing.assert_array_equal(broken[:n, 4:193], x[:n, 4:193])               # the same poses
    np.testing.assert_array_equal(broken[n:], x[n:])                               # padding untouched


def test_freeze_holds_one_pose_for_part_of_the_clip(motion):
    x, n = motion
    broken = corrupt(x, n, "freeze", np.random.default_rng(1))
    held = np.all(broken[1:n] == broken[:n - 1], axis=1)
    assert 0.3 * n - 2 <= held.sum() <= 0.6 * n
    assert not np.allclose(broken, x)


def test_reverse_twice_is_the_motion_and_reverse_flips_the_velocities(motion):
    x, n = motion
    rng = np.random.default_rng(2)
    once = corrupt(x, n, "reverse", rng)
    np.testing.assert_allclose(corrupt(once, n, "reverse", rng), x)
    np.testing.assert_allclose(once[:n, 4:67], x[:n][::-1, 4:67])                   # poses in reverse order
    np.testing.assert_allclose(once[:n, 0:3], -x[:n][::-1, 0:3])                    # root velocities negated


def test_corruptions_are_named_and_unknown_ones_refused(motion):
    x, n = motion
    assert set(CORRUPTIONS) == {"drift", "freeze", "reverse"}
    with pytest.raises(ValueError, match="unknown corruption"):
        corrupt(x, n, "melt", np.random.default_rng(0))


def test_hold_pad_stands_still_around_the_motion_without_moving_the_body(motion):
    x, n = motion
    total, n = x.shape[0], min(n, x.shape[0] - 10)                                   # room for 10 held frames
    padded = hold_pad(x, n, total, before=3)
    np.testing.assert_array_equal(padded[3:3 + n], x[:n])                             # the motion itself, shifted
    for frame, pose in ((0, x[0]), (2, x[0]), (3 + n, x[n - 1]), (total - 1, x[n - 1])):
        np.testing.assert_array_equal(padded[frame, 3:193], pose[3:193])               # height, joints, rotations
        np.testing.assert_array_equal(padded[frame, 0:3], 0.0)                         # no root motion
        np.testing.assert_array_equal(padded[frame, 193:259], 0.0)                     # no joint velocity
        np.testing.assert_array_equal(padded[frame, 259:263], 1.0)                     # both feet down
    _, root = root_trajectory(x[:n].astype(np.float64))
    _, moved = root_trajectory(padded.astype(np.float64))
    np.testing.assert_allclose(moved[3 + n - 1] - moved[3], root[-1] - root[0], atol=1e-5)     # the same path
    np.testing.assert_allclose(moved[-1], moved[3 + n], atol=1e-6)     # the last velocity lands, then it stands
    np.testing.assert_array_equal(hold_pad(x, n, n, before=0)[:n], x[:n])


@pytest.mark.parametrize(("new_length", "before"), [(10, 0), (200, 0), (None, -1), (None, 5)])
def test_hold_pad_refuses_lengths_it_cannot_make(motion, new_length, before):
    x, n = motion
    new_length = n + 4 if new_length is None else new_length
    with pytest.raises(ValueError, match="cannot pad"):
        hold_pad(x, n, new_length, before)


def test_pad_lengths_lengthens_only_the_drawn_motions_within_the_batch_width(tiny_dataset):
    data = load_dataset(tiny_dataset, "train")
    features, lengths = data.features[:16], data.lengths[:16]
    same, same_len = pad_lengths(features, lengths, 0.0, np.random.default_rng(0))
    np.testing.assert_array_equal(same, features)
    np.testing.assert_array_equal(same_len, lengths)
    padded, new = pad_lengths(features, lengths, 1.0, np.random.default_rng(0))
    assert np.all(new >= lengths) and np.all(new <= features.shape[1]) and np.any(new > lengths)
    for f, g, n, m in zip(features, padded, lengths, new, strict=True):
        starts = [s for s in range(m - n + 1) if np.array_equal(g[s:s + n], f[:n])]
        assert starts, "the motion must appear unchanged inside its padded copy"
        np.testing.assert_array_equal(g[m:], 0.0)
    np.testing.assert_array_equal(features, data.features[:16])                        # the input is not touched


def test_hold_pad_finds_the_velocity_blocks_of_a_kit_motion():
    from sopo_ray.motion.features import feature_slices

    kit = np.random.default_rng(0).normal(size=(30, 251)).astype(np.float32)           # 21 joints
    padded = hold_pad(kit, 20, 30, before=4)
    blocks = feature_slices(21)
    for held in (padded[:4], padded[24:]):
        for velocity in ("root_rot_vel", "root_lin_vel", "local_vel"):
            np.testing.assert_array_equal(held[:, blocks[velocity]], 0.0)
        np.testing.assert_array_equal(held[:, blocks["foot_contact"]], 1.0)
        np.testing.assert_array_equal(held[:, blocks["ric"]], held[:1, blocks["ric"]].repeat(len(held), 0))   # one pose
    np.testing.assert_array_equal(padded[4:24], kit[:20])
