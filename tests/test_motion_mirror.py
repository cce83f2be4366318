"""Left-right mirroring of motions and captions (HumanML3D's augmentation), checked on the real sample, on
synthetic clips against the oracle, and on captions."""

from __future__ import annotations

import json

import numpy as np
import pytest

from sopo_ray.data import load_dataset
from sopo_ray.data.synthetic.oracle import oracle_score
from sopo_ray.motion.features import features_to_joints, recover_from_rot
from sopo_ray.motion.mirror import JOINT_PERMUTATION, mirror_caption, mirror_features

REFLECT = np.array([-1.0, 1.0, 1.0])


def real_features(folder) -> np.ndarray:
    return np.load(sorted((folder / "new_joint_vecs").glob("*.npy"))[0]).astype(np.float64)


def mirrored_joints(joints: np.ndarray) -> np.ndarray:
    """The reference: reflect x and exchange left and right joints, on positions."""
    return joints[:, JOINT_PERMUTATION] * REFLECT


def test_mirrored_features_decode_to_the_mirrored_skeleton(humanml3d_sample):
    x = real_features(humanml3d_sample)
    m = mirror_features(x)
    # the position route is exact; the rotation route re-poses the template skeleton, whose left and right
    # bones differ by up to ~7 mm, so its joints agree to about a centimetre
    np.testing.assert_allclose(features_to_joints(m), mirrored_joints(features_to_joints(x)), atol=1e-9)
    assert np.abs(recover_from_rot(m) - mirrored_joints(recover_from_rot(x))).max() < 0.02
    np.testing.assert_array_equal(mirror_features(m), x)           # an involution
    assert m.shape == x.shape and not np.allclose(m, x)


def test_mirroring_keeps_dtype_and_batches_and_refuses_other_layouts(humanml3d_sample):
    x = real_features(humanml3d_sample).astype(np.float32)
    batch = np.stack([x, x[::-1].copy()])
    out = mirror_features(batch)
    assert out.dtype == np.float32 and out.shape == batch.shape
    np.testing.assert_array_equal(out[0], mirror_features(x))
    with pytest.raises(ValueError, match="263"):
        mirror_features(np.zeros((10, 251), np.float32))


def swap_sides(params: dict) -> dict:
    other = {"left": "right", "right": "left"}
    swapped = json.loads(json.dumps(params))
    for seg in swapped["segments"]:
        for key in ("direction", "hand", "leg"):
            if seg.get(key) in other:
                seg[key] = other[seg[key]]
    return swapped


def test_a_mirrored_synthetic_motion_obeys_the_mirrored_caption_parameters(tiny_dataset):
    data = load_dataset(tiny_dataset, "train")
    sided = 0
    for features, length, params in zip(data.features, data.lengths, data.params, strict=True):
        mirrored = mirror_features(features[:length])
        assert oracle_score(mirrored, swap_sides(params)).score == pytest.approx(1.0)
        if swap_sides(params) != params:
            sided += 1
            assert oracle_score(mirrored, params).score < 1.0
    assert sided > 0


@pytest.mark.parametrize(("caption", "mirrored"), [
    ("a person waves with the left hand", "a person waves with the right hand"),
    ("Right turn, then left kick", "Left turn, then right kick"),
    ("turns clockwise and then counterclockwise", "turns counterclockwise and then clockwise"),
    ("a person walks forward", "a person walks forward"),
    ("the rightful owner leaves", "the rightful owner leaves"),
])
def test_mirror_caption_exchanges_sides_as_whole_words(caption, mirrored):
    assert mirror_caption(caption) == mirrored
    assert mirror_caption(mirror_caption(caption)) == caption
