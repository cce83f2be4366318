"""The synthetic dataset: procedural motions on the HumanML3D skeleton, the build, the splits, the loader."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from sopo_ray.config import DataConfig
from sopo_ray.data import load_dataset
from sopo_ray.data.synthetic.build import assign_splits, data_id_for, make_motion, synthesize
from sopo_ray.data.synthetic.space import ACTIONS, HELD_OUT_COMBOS, combo_key, is_held_out, sample_params
from sopo_ray.errors import DataError
from sopo_ray.motion.features import features_to_joints, group_mean_std
from sopo_ray.motion.skeleton import BONE_LENGTHS, bone_lengths


def _one_of_each() -> list[dict]:
    """One single-segment parameter set per action, with its attributes at their last choice."""
    out = []
    for name, spec in ACTIONS.items():
        segment = {"action": name, **{attr: choices[-1] for attr, choices in spec.attributes}}
        out.append({"segments": [segment], "fractions": [1.0]})
    return out


@pytest.mark.parametrize("params", _one_of_each(), ids=lambda p: p["segments"][0]["action"])
def test_every_action_keeps_bones_rigid_and_stands_on_the_floor(params):
    joints = synthesize(params, 90, np.random.default_rng(3))
    assert joints.shape == (91, 22, 3) and np.isfinite(joints).all()
    # Driven by rotations + FK: every bone keeps the HumanML3D length in every frame.
    np.testing.assert_allclose(bone_lengths(joints)[:, 1:], np.broadcast_to(BONE_LENGTHS[1:], (91, 21)), atol=1e-6)
    feet = joints[:, [7, 8, 10, 11], 1].min(1)
    lowest = joints[:, :, 1].min(1)
    airborne = params["segments"][0]["action"] == "jump"
    # The lowest joint touches the floor (except in the flight of a jump) and nothing goes below it.
    assert lowest.min() > -1e-6
    if not airborne:
        np.testing.assert_allclose(lowest, 0.0, atol=1e-6)
    else:
        assert feet.max() > 0.15 and (feet < 1e-6).mean() > 0.3


def test_walking_plants_the_feet_and_moves_at_a_walking_speed():
    params = {"segments": [{"action": "walk", "direction": "forward", "speed": "normal"}], "fractions": [1.0]}
    joints = synthesize(params, 100, np.random.default_rng(0))
    step = np.linalg.norm(np.diff(joints[:, [7, 8, 10, 11]][:, :, [0, 2]], axis=0), axis=-1)
    # Some foot joint is still on the floor in (almost) every frame: no skating.
    assert np.median(step.min(1)) < 1e-6
    speed = (joints[-1, 0, 2] - joints[0, 0, 2]) / (100 / 20)  # m/s, starting and stopping included
    assert 0.8 < speed < 1.5
    assert abs(joints[-1, 0, 0] - joints[0, 0, 0]) < 0.3  # straight ahead (+z)


def test_make_motion_is_deterministic_and_in_humanml3d_format():
    cfg = DataConfig(size=10, max_frames=80)
    a, b = make_motion(cfg, 4), make_motion(cfg, 4)
    np.testing.assert_array_equal(a["features"], b["features"])
    assert a["captions"] == b["captions"] and a["params"] == b["params"]
    assert a["features"].dtype == np.float32 and a["features"].shape[1] == 263
    assert cfg.min_frames <= len(a["features"]) <= cfg.max_frames
    assert json.loads(json.dumps(a["params"])) == a["params"]
    assert len(set(a["captions"])) == cfg.captions_per_motion
    assert make_motion(cfg, 5)["motion_id"] != a["motion_id"]


def test_data_id_tracks_the_generator_config():
    base = DataConfig()
    assert data_id_for(base) == data_id_for(DataConfig())
    assert data_id_for(base) != data_id_for(DataConfig(size=base.size + 1))
    assert data_id_for(base) != data_id_for(DataConfig(max_frames=120))
    # Where the folder lives and how many processes build it do not change the contents.
    assert data_id_for(base) == data_id_for(DataConfig(root=Path("/elsewhere"), build_workers=1))


def test_split_holds_out_parameter_combinations():
    rng = np.random.default_rng(0)
    params = [sample_params(rng, 40, 120)[0] for _ in range(900)]
    splits = assign_splits(params, seed=0)
    seen_splits = ("train", "val", "test")
    train_combos = {combo_key(s) for p, sp in zip(params, splits, strict=True) if sp == "train" for s in p["segments"]}
    assert not train_combos & set(HELD_OUT_COMBOS)
    # compositional holds exactly the held-out combinations and orders; test is in-distribution
    assert all(is_held_out(p) == (sp == "compositional") for p, sp in zip(params, splits, strict=True))
    test_combos = {combo_key(s) for p, sp in zip(params, splits, strict=True) if sp == "test" for s in p["segments"]}
    assert test_combos <= train_combos
    seen = [sp for sp in splits if sp in seen_splits]
    assert 0.72 < seen.count("train") / len(seen) < 0.86
    assert 0.12 < seen.count("test") / len(seen) < 0.2 and seen.count("val") > 0
    assert assign_splits(params, seed=0) == splits


def test_a_tiny_build_still_gets_every_split_and_keeps_held_out_motions_out_of_the_others():
    rng = np.random.default_rng(3)
    params = [sample_params(rng, 40, 120)[0] for _ in range(5)]
    splits = assign_splits(params, seed=0)
    assert set(splits) == {"train", "val", "test", "compositional"}
    assert not any(is_held_out(p) for p, sp in zip(params, splits, strict=True) if sp != "compositional")


def test_tiny_dataset_layout_and_statistics(tiny_dataset):
    root = Path(tiny_dataset.root)
    meta = json.loads((root / "meta.json").read_text())
    assert meta["data_id"] == data_id_for(tiny_dataset) and sum(meta["counts"].values()) == 40
    splits = {s: load_dataset(tiny_dataset, s) for s in ("train", "val", "test", "compositional")}
    for name, data in splits.items():
        assert len(data) == meta["counts"][name] > 0
        assert data.features.shape == (len(data), 80, 263) and data.feature_dim == 263 and data.skeleton == "t2m"
        assert data.data_id == meta["data_id"] and len(data.params) == len(data)
        assert ((data.lengths >= 40) & (data.lengths <= 80)).all()
        for i, length in enumerate(data.lengths):
            assert not data.features[i, length:].any()
        assert all(len(c) == 3 for c in data.captions)
    train = splits["train"]
    frames = np.concatenate([f[:n] for f, n in zip(train.features, train.lengths, strict=True)])
    mean, std = group_mean_std(frames)
    np.testing.assert_allclose(train.mean, mean, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(train.std, std, rtol=1e-5, atol=1e-6)
    assert np.unique(train.std[67:193]).size == 1  # group-averaged like HumanML3D's Std.npy
    ids = [i for d in splits.values() for i in d.motion_ids]
    assert len(ids) == len(set(ids)) == 40
    # The stored motion is the one the generator makes for that index.
    first = make_motion(tiny_dataset, int(train.motion_ids[0]))
    np.testing.assert_array_equal(train.features[0, :train.lengths[0]], first["features"])
    # Recovered joints are a person on the floor.
    joints = features_to_joints(train.features[0, :train.lengths[0]])
    assert abs(joints[:, :, 1].min()) < 0.02 and 1.3 < joints[0, 15, 1] < 1.7


def test_load_dataset_errors(tiny_dataset, tmp_path):
    with pytest.raises(DataError, match="unknown split"):
        load_dataset(tiny_dataset, "dev")
    other = tiny_dataset.model_copy(update={"size": 41})
    with pytest.raises(DataError, match="sopo data build"):
        load_dataset(other, "train")
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "notes.txt").write_text("not a dataset")
    with pytest.raises(DataError, match="no meta.json"):
        load_dataset(DataConfig(root=tmp_path / "junk", size=5), "train")


def test_load_dataset_builds_a_missing_synthetic_folder(tmp_path):
    cfg = DataConfig(root=tmp_path / "fresh", size=6, max_frames=60, build_workers=1)
    data = load_dataset(cfg, "train")
    assert (tmp_path / "fresh" / "meta.json").is_file() and len(data) >= 1
    assert sum(len(load_dataset(cfg, s)) for s in ("train", "val", "test", "compositional")) == 6
