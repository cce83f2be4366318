"""The real-dataset loader on tiny folders written in the HumanML3D / KIT-ML layout (real sample features)."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from sopo_ray.config import DataConfig
from sopo_ray.data import load_dataset
from sopo_ray.data.humanml3d import parse_text_line
from sopo_ray.errors import DataError


def _write_folder(root: Path, features: np.ndarray, mean: np.ndarray, std: np.ndarray) -> Path:
    """A HumanML3D-layout folder: two train clips (one with a captioned sub-clip), one val, one test."""
    (root / "new_joint_vecs").mkdir(parents=True)
    (root / "texts").mkdir()
    for motion_id in ("000001", "M000001", "000002", "000003"):
        np.save(root / "new_joint_vecs" / f"{motion_id}.npy", features)
    texts = {
        "000001": ["a person serves a tennis ball.#a/DET person/NOUN serve/VERB#0.0#0.0",
                   "someone swings an arm overhead#someone/PRON#0.0#0.0",
                   "#empty/NOUN#0.0#0.0",
                   "the person raises the racket#the/DET#1.0#4.0",
                   "too short to keep#x/NOUN#0.5#1.5"],
        "M000001": ["a person serves with the other hand.#a/DET#nan#nan"],
        "000002": ["a man hits a serve.#a/DET man/NOUN#0.0#0.0"],
        "000003": ["a woman serves.#a/DET woman/NOUN#0.0#0.0"],
    }
    for motion_id, lines in texts.items():
        (root / "texts" / f"{motion_id}.txt").write_text("\n".join(lines) + "\n")
    (root / "train.txt").write_text("000001\nM000001\nmissing_id\n")
    (root / "val.txt").write_text("000002\n")
    (root / "test.txt").write_text("000003\n")
    np.save(root / "Mean.npy", mean)
    np.save(root / "Std.npy", std)
    return root


@pytest.fixture
def humanml3d_folder(humanml3d_sample, tmp_path) -> Path:
    features = np.load(humanml3d_sample / "new_joint_vecs" / "012314.npy")
    return _write_folder(tmp_path / "HumanML3D", features, np.load(humanml3d_sample / "Mean.npy"),
                         np.load(humanml3d_sample / "Std.npy"))


def test_parse_text_line():
    assert parse_text_line("a man walks.#a/DET man/NOUN walk/VERB#0.0#0.0") == ("a man walks.", 0.0, 0.0)
    assert parse_text_line("jumps#jump/VERB#1.5#3.25") == ("jumps", 1.5, 3.25)
    assert parse_text_line("waves#wave/VERB#nan#nan") == ("waves", 0.0, 0.0)
    assert parse_text_line("#only/ADJ tokens#0#0") is None


def test_loads_splits_captions_and_subclips(humanml3d_folder, humanml3d_sample):
    cfg = DataConfig(source="humanml3d", root=humanml3d_folder)
    real = np.load(humanml3d_sample / "new_joint_vecs" / "012314.npy")
    train = load_dataset(cfg, "train")
    assert train.motion_ids == ["000001", "000001_20_80", "M000001"]
    assert train.skeleton == "t2m" and train.feature_dim == 263 and train.params is None
    assert train.features.shape == (3, 196, 263) and train.lengths.tolist() == [170, 60, 170]
    np.testing.assert_array_equal(train.features[0, :170], real)
    np.testing.assert_array_equal(train.features[1, :60], real[20:80])
    assert not train.features[0, 170:].any()
    assert train.captions[0] == ["a person serves a tennis ball.", "someone swings an arm overhead"]
    assert train.captions[1] == ["the person raises the racket"]
    np.testing.assert_array_equal(train.mean, np.load(humanml3d_sample / "Mean.npy"))
    np.testing.assert_array_equal(train.std, np.load(humanml3d_sample / "Std.npy"))
    val, test = load_dataset(cfg, "val"), load_dataset(cfg, "test")
    assert val.motion_ids == ["000002"] and test.motion_ids == ["000003"]
    assert train.data_id == val.data_id == test.data_id


def test_crops_to_max_frames_and_id_ignores_location(humanml3d_folder, tmp_path):
    cropped = load_dataset(DataConfig(source="humanml3d", root=humanml3d_folder, max_frames=120), "train")
    assert cropped.features.shape[1] == 120 and cropped.lengths.max() == 120
    moved = tmp_path / "elsewhere"
    shutil.copytree(humanml3d_folder, moved)
    again = load_dataset(DataConfig(source="humanml3d", root=moved, max_frames=120), "train")
    assert again.data_id == cropped.data_id
    assert load_dataset(DataConfig(source="humanml3d", root=moved), "train").data_id != cropped.data_id


def test_errors_name_the_problem(humanml3d_folder, humanml3d_sample, tmp_path):
    with pytest.raises(DataError, match="not found"):
        load_dataset(DataConfig(source="humanml3d", root=tmp_path / "nope"), "train")
    wrong = _write_folder(tmp_path / "wrong_dim", np.zeros((60, 251), np.float32),
                          np.load(humanml3d_sample / "Mean.npy"), np.load(humanml3d_sample / "Std.npy"))
    with pytest.raises(DataError, match="kitml"):
        load_dataset(DataConfig(source="humanml3d", root=wrong), "train")
    with pytest.raises(DataError, match="needs 251"):
        load_dataset(DataConfig(source="kitml", root=humanml3d_folder), "train")
    (humanml3d_folder / "val.txt").unlink()
    with pytest.raises(DataError, match="val.txt"):
        load_dataset(DataConfig(source="humanml3d", root=humanml3d_folder), "val")
    shutil.rmtree(humanml3d_folder / "texts")
    with pytest.raises(DataError, match="texts/"):
        load_dataset(DataConfig(source="humanml3d", root=humanml3d_folder), "train")


def test_reads_kit_ml_layout(tmp_path):
    rng = np.random.default_rng(0)
    features = rng.normal(size=(100, 251)).astype(np.float32)
    root = _write_folder(tmp_path / "KIT-ML", features, features.mean(0), features.std(0))
    train = load_dataset(DataConfig(source="kitml", root=root), "train")
    assert train.skeleton == "kit" and train.feature_dim == 251
    # KIT-ML runs at 12.5 fps: the 1.0-4.0 s sub-clip is frames 12..50.
    assert "000001_12_50" in train.motion_ids
    index = train.motion_ids.index("000001_12_50")
    np.testing.assert_array_equal(train.features[index, :38], features[12:50])
