"""Left-right mirroring of a motion and of its caption: HumanML3D's own data augmentation (its "M" files).

A mirrored motion is the clip reflected in the body's sagittal plane (x -> -x in the facing frame, left and right
joints exchanged); its caption is the same sentence with left and right exchanged. The pair is a valid (text,
motion) example, and beside the original it is the hardest negative a text-motion model can see: for a caption
that names a side it differs only in that side, for one that names none it is a second positive.

`mirror_features` works directly on the 263-dim features (exact: every block is an equivariant function of the
joint positions under the reflection, rotations are conjugated by it), so it is cheap enough for a whole split.
"""

from __future__ import annotations

import re

import numpy as np

from sopo_ray.motion.features import FEATURE_DIM, FEATURE_SLICES, NUM_JOINTS

# Left/right joint pairs of the 22-joint SMPL skeleton (hips, knees, ankles, feet, collars, shoulders, elbows,
# wrists); the spine, neck and head map to themselves.
MIRROR_PAIRS = ((1, 2), (4, 5), (7, 8), (10, 11), (13, 14), (16, 17), (18, 19), (20, 21))
JOINT_PERMUTATION = np.arange(NUM_JOINTS)
for _a, _b in MIRROR_PAIRS:
    JOINT_PERMUTATION[_a], JOINT_PERMUTATION[_b] = _b, _a
# Foot contacts are [left ankle, left foot, right ankle, right foot].
CONTACT_PERMUTATION = np.array([2, 3, 0, 1])
# A rotation's first two matrix columns under R -> M R M with M = diag(-1, 1, 1).
ROT6D_SIGNS = np.array([1.0, -1.0, -1.0, -1.0, 1.0, 1.0])

SIDE_WORDS = {"left": "right", "right": "left", "clockwise": "counterclockwise",
              "counterclockwise": "clockwise", "counter-clockwise": "clockwise"}
_SIDE_RE = re.compile(r"\b(" + "|".join(sorted(map(re.escape, SIDE_WORDS), key=len, reverse=True)) + r")\b",
                      re.IGNORECASE)


def mirror_features(features: np.ndarray) -> np.ndarray:
    """The mirrored clip of un-normalised HumanML3D features `[..., T, 263]` (same shape and dtype)."""
    x = np.asarray(features)
    if x.shape[-1] != FEATURE_DIM:
        raise ValueError(f"mirroring needs 22-joint {FEATURE_DIM}-dim features, got {x.shape[-1]}")
    out = x.copy()
    lead = x.shape[:-1]
    out[..., 0] = -x[..., 0]                       # yaw velocity turns the other way
    out[..., 1] = -x[..., 1]                       # root velocity: x (sideways) flips, z and height stay
    ric = x[..., FEATURE_SLICES["ric"]].reshape(*lead, NUM_JOINTS - 1, 3)[..., JOINT_PERMUTATION[1:] - 1, :]
    out[..., FEATURE_SLICES["ric"]] = (ric * np.array([-1.0, 1.0, 1.0])).reshape(*lead, -1)
    rot = x[..., FEATURE_SLICES["rot6d"]].reshape(*lead, NUM_JOINTS - 1, 6)[..., JOINT_PERMUTATION[1:] - 1, :]
    out[..., FEATURE_SLICES["rot6d"]] = (rot * ROT6D_SIGNS).reshape(*lead, -1)
    vel = x[..., FEATURE_SLICES["local_vel"]].reshape(*lead, NUM_JOINTS, 3)[..., JOINT_PERMUTATION, :]
    out[..., FEATURE_SLICES["local_vel"]] = (vel * np.array([-1.0, 1.0, 1.0])).reshape(*lead, -1)
    out[..., FEATURE_SLICES["foot_contact"]] = x[..., FEATURE_SLICES["foot_contact"]][..., CONTACT_PERMUTATION]
    return out.astype(x.dtype, copy=False)


def mirror_caption(caption: str) -> str:
    """The caption with its sides exchanged ("left" <-> "right", "clockwise" <-> "counterclockwise"), keeping
    the capitalisation of each word."""
    def swap(match: re.Match[str]) -> str:
        word = match.group(0)
        other = SIDE_WORDS[word.lower()]
        return other.capitalize() if word[0].isupper() else other

    return _SIDE_RE.sub(swap, caption)
