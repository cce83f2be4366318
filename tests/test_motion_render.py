"""Stick-figure renderer and the `sopo render` command, on the real HumanML3D sample."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from sopo_ray.cli import main
from sopo_ray.commands.render import load_motion_joints
from sopo_ray.errors import DataError
from sopo_ray.motion.features import features_to_joints
from sopo_ray.motion.render import CHAIN_COLORS, render_filmstrip, render_gif


def color_rows(image: Image.Image, hex_color: str, tolerance: int = 40) -> np.ndarray:
    """Row indices of pixels within `tolerance` of a colour."""
    rgb = np.asarray(image.convert("RGB")).astype(int)
    target = np.array([int(hex_color[i:i + 2], 16) for i in (1, 3, 5)])
    return np.nonzero(np.abs(rgb - target).max(-1) <= tolerance)[0]


@pytest.fixture(scope="module")
def sample_joints(humanml3d_sample):
    return np.load(humanml3d_sample / "new_joints" / "012314.npy")


def test_filmstrip_draws_an_upright_person(sample_joints, tmp_path):
    path = render_filmstrip([sample_joints], ["a person serves a tennis ball"], tmp_path / "strip.png", frames=3)
    image = Image.open(path)
    assert image.width > 2 * image.height
    right_leg, left_leg, spine, right_arm, left_arm = (color_rows(image, c) for c in CHAIN_COLORS)
    assert min(len(rows) for rows in (right_leg, left_leg, spine, right_arm, left_arm)) > 50
    # y is up: arms start above the legs, and the feet are the lowest points, below spine and hands.
    # (The spine's top is not compared: the black title text shares its colour.)
    assert right_arm.min() < right_leg.min() and left_arm.min() < left_leg.min()
    lowest_foot = max(right_leg.max(), left_leg.max())
    assert lowest_foot > spine.max() and lowest_foot > max(right_arm.max(), left_arm.max())


def test_gif_has_one_frame_per_stride_and_real_time_duration(sample_joints, tmp_path):
    short = sample_joints[:30]
    path = render_gif([short, sample_joints[:12]], ["first", "second, shorter"], tmp_path / "two.gif", stride=3)
    gif = Image.open(path)
    assert gif.n_frames == 10
    assert gif.info["duration"] == 150
    single = Image.open(render_gif([short], ["one"], tmp_path / "one.gif", stride=10))
    assert single.n_frames == 3 and gif.width == 2 * single.width


def test_renderer_rejects_bad_input(sample_joints, tmp_path):
    with pytest.raises(DataError, match="captions"):
        render_gif([sample_joints], [], tmp_path / "x.gif")
    with pytest.raises(DataError, match="22 or 21"):
        render_filmstrip([np.zeros((5, 263))], ["x"], tmp_path / "x.png")
    bad = sample_joints[:5].copy()
    bad[2, 3, 0] = np.nan
    with pytest.raises(DataError, match="NaN"):
        render_filmstrip([bad], ["x"], tmp_path / "x.png")


def test_load_motion_accepts_features_and_joints_and_trims_padding(humanml3d_sample, tmp_path):
    features = np.load(humanml3d_sample / "new_joint_vecs" / "012314.npy")
    padded = np.concatenate([features[:50], np.zeros((20, 263), np.float32)])
    np.save(tmp_path / "padded.npy", padded)
    np.testing.assert_allclose(load_motion_joints(tmp_path / "padded.npy"), features_to_joints(features[:50]),
                               atol=1e-6)
    joints = load_motion_joints(humanml3d_sample / "new_joints" / "012314.npy")
    assert joints.shape == (170, 22, 3)
    np.save(tmp_path / "batch.npy", np.zeros((2, 10, 263)))
    with pytest.raises(DataError, match="one motion per file"):
        load_motion_joints(tmp_path / "batch.npy")


def test_cli_renders_features_and_joints_side_by_side(humanml3d_sample, tmp_path, capsys):
    features = np.load(humanml3d_sample / "new_joint_vecs" / "012314.npy")[:24]
    joints = np.load(humanml3d_sample / "new_joints" / "012314.npy")[:24]
    np.save(tmp_path / "feats.npy", features)
    np.save(tmp_path / "joints.npy", joints)
    out = tmp_path / "cmp.gif"
    code = main(["render", str(tmp_path / "feats.npy"), str(tmp_path / "joints.npy"),
                 "--caption", "from features", "from joints", "--out", str(out), "--stride", "4"])
    assert code == 0
    assert Image.open(out).n_frames == 6
    assert Image.open(tmp_path / "cmp.png").width > 0
    assert "wrote" in capsys.readouterr().out

    only_png = tmp_path / "strip.png"
    assert main(["render", str(tmp_path / "joints.npy"), "--out", str(only_png), "--frames", "2"]) == 0
    assert only_png.is_file() and not only_png.with_suffix(".gif").exists()


def test_cli_user_errors_exit_2(tmp_path, capsys):
    np.save(tmp_path / "m.npy", np.zeros((5, 7)))
    assert main(["render", str(tmp_path / "m.npy"), "--out", str(tmp_path / "x.gif")]) == 2
    assert "expected features" in capsys.readouterr().err
    assert main(["render", str(tmp_path / "m.npy"), "--out", str(tmp_path / "x.mp4")]) == 2
    assert main(["render", str(tmp_path / "missing.npy"), "--out", str(tmp_path / "x.gif")]) == 2
    assert main(["render", str(tmp_path / "m.npy"), "--caption", "a", "b", "--out", str(tmp_path / "x.gif")]) == 2
