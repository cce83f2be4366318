"""The 22-joint SMPL skeleton of HumanML3D ("t2m"): joints, kinematic chains, offsets, FK and IK.

Conventions: metres, y up, the rest pose faces +z with its left side on +x. The bone offsets are the raw unit
directions scaled by the HumanML3D target skeleton (clip 000021, frame 0), which every HumanML3D clip is
retargeted to.

HumanML3D's kinematics is per chain, not per parent: every chain restarts from the root rotation, the two arm
chains included (they start at spine3, joint 9, but do not inherit the spine's rotations), and each joint's own
rotation turns its own incoming bone. `forward_kinematics` and `inverse_kinematics` follow that exactly, so the
6D rotations in the 263-dim features reproduce the joints.
"""

from __future__ import annotations

import numpy as np

from sopo_ray.errors import DataError
from sopo_ray.motion.quaternion import Array, as_backend, backend, normalize, qbetween, qinv, qmul, qrot

JOINT_NAMES: tuple[str, ...] = (
    "pelvis", "left_hip", "right_hip", "spine1", "left_knee", "right_knee", "spine2", "left_ankle",
    "right_ankle", "spine3", "left_foot", "right_foot", "neck", "left_collar", "right_collar", "head",
    "left_shoulder", "right_shoulder", "left_elbow", "right_elbow", "left_wrist", "right_wrist",
)
NUM_JOINTS = 22

PARENTS: tuple[int, ...] = (-1, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 9, 9, 12, 13, 14, 16, 17, 18, 19)

# Order matters: the spine chain places joint 9 before the arm chains start from it.
KINEMATIC_CHAIN: tuple[tuple[int, ...], ...] = (
    (0, 2, 5, 8, 11),       # right leg
    (0, 1, 4, 7, 10),       # left leg
    (0, 3, 6, 9, 12, 15),   # spine -> head
    (9, 14, 17, 19, 21),    # right arm
    (9, 13, 16, 18, 20),    # left arm
)
CHAIN_NAMES: tuple[str, ...] = ("right_leg", "left_leg", "spine", "right_arm", "left_arm")

# KIT-ML (21 joints, 251 features) chains in the same semantic order, for drawing KIT motions.
KIT_KINEMATIC_CHAIN: tuple[tuple[int, ...], ...] = (
    (0, 11, 12, 13, 14, 15), (0, 16, 17, 18, 19, 20), (0, 1, 2, 3, 4), (3, 5, 6, 7), (3, 8, 9, 10),
)

RAW_OFFSETS = np.array([
    [0, 0, 0], [1, 0, 0], [-1, 0, 0], [0, 1, 0], [0, -1, 0], [0, -1, 0], [0, 1, 0], [0, -1, 0],
    [0, -1, 0], [0, 1, 0], [0, 0, 1], [0, 0, 1], [0, 1, 0], [1, 0, 0], [-1, 0, 0], [0, 0, 1],
    [0, -1, 0], [0, -1, 0], [0, -1, 0], [0, -1, 0], [0, -1, 0], [0, -1, 0],
], dtype=np.float64)

BONE_LENGTHS = np.array([
    0.0, 0.103074, 0.109883, 0.131568, 0.393623, 0.390188, 0.143190, 0.432433, 0.425643, 0.057365,
    0.143382, 0.149419, 0.219360, 0.137487, 0.143383, 0.103039, 0.131614, 0.122984, 0.256840, 0.263092,
    0.266012, 0.269876,
], dtype=np.float64)

OFFSETS = RAW_OFFSETS * BONE_LENGTHS[:, None]

# Facing direction: across = (r_hip - l_hip) + (r_shoulder - l_shoulder), forward = y cross across.
FACE_JOINTS = (2, 1, 17, 16)
# HumanML3D's IK (and so every per-frame root rotation in the features) unpacks the same indices with the hip
# pair swapped: across = (l_hip - r_hip) + (r_shoulder - l_shoulder). Reproduced on purpose.
IK_FACE_JOINTS = (1, 2, 17, 16)

FOOT_JOINTS_LEFT = (7, 10)
FOOT_JOINTS_RIGHT = (8, 11)


def facing_direction(joints: np.ndarray, face_joints: tuple[int, int, int, int] = FACE_JOINTS) -> np.ndarray:
    """Horizontal forward direction [..., 3] (not normalised) from hips and shoulders of joints [..., 22, 3].

    `face_joints` = (a, b, c, d) gives across = (p_a - p_b) + (p_c - p_d) and forward = (0, 1, 0) x across,
    with across normalised first (as HumanML3D does).
    """
    a, b, c, d = face_joints
    across = normalize((joints[..., a, :] - joints[..., b, :]) + (joints[..., c, :] - joints[..., d, :]))
    return np.stack([across[..., 2], np.zeros_like(across[..., 0]), -across[..., 0]], -1)


def forward_kinematics(local_rot: Array, root_pos: Array, offsets: np.ndarray = OFFSETS) -> Array:
    """Joint positions [..., 22, 3] from local rotations [..., 22, 4] (wxyz) and root positions [..., 3].

    `local_rot[..., 0, :]` rotates the whole body (the rest pose faces +z); `local_rot[..., j, :]` for j >= 1
    turns joint j's incoming bone relative to the accumulated rotation of its chain, which restarts from the
    root rotation for every chain. Quaternions are normalised first. Works on numpy arrays and
    (differentiably) on torch tensors.
    """
    if tuple(local_rot.shape[-2:]) != (NUM_JOINTS, 4) or root_pos.shape[-1] != 3:
        raise DataError(f"forward_kinematics needs local_rot [..., 22, 4] and root_pos [..., 3], got "
                        f"{tuple(local_rot.shape)} and {tuple(root_pos.shape)}")
    xp = backend(local_rot)
    local_rot = normalize(local_rot)
    offs = as_backend(offsets, local_rot)
    joints: list[Array | None] = [None] * NUM_JOINTS
    joints[0] = root_pos
    for chain in KINEMATIC_CHAIN:
        accumulated = local_rot[..., 0, :]
        for parent, child in zip(chain[:-1], chain[1:], strict=True):
            accumulated = qmul(accumulated, local_rot[..., child, :])
            joints[child] = qrot(accumulated, offs[child] * xp.ones_like(root_pos)) + joints[parent]
    return xp.stack(joints, -2)


def inverse_kinematics(joints: np.ndarray, root_quat: np.ndarray) -> np.ndarray:
    """Local rotations [T, 22, 4] that make `forward_kinematics` rebuild the bone directions of joints [T, 22, 3].

    `root_quat` [T, 4] is used as index 0 and as the start of every chain (HumanML3D passes the facing
    rotation). A zero-length bone gets the identity rotation instead of NaN.
    """
    quats = np.zeros(joints.shape[:-1] + (4,), dtype=np.float64)
    quats[..., 0, :] = root_quat
    for chain in KINEMATIC_CHAIN:
        accumulated = root_quat
        for parent, child in zip(chain[:-1], chain[1:], strict=True):
            bone = joints[..., child, :] - joints[..., parent, :]
            rest = np.broadcast_to(RAW_OFFSETS[child], bone.shape)
            direction = np.where(np.linalg.norm(bone, axis=-1, keepdims=True) > 1e-9, bone, rest)
            local = qmul(qinv(accumulated), qbetween(rest, direction))
            quats[..., child, :] = local
            accumulated = qmul(accumulated, local)
    return quats


def bone_lengths(joints: np.ndarray) -> np.ndarray:
    """Length [..., 22] of each joint's incoming bone (0 for the root) in joints [..., 22, 3]."""
    parents = np.array(PARENTS[1:])
    lengths = np.linalg.norm(joints[..., 1:, :] - joints[..., parents, :], axis=-1)
    return np.concatenate([np.zeros_like(lengths[..., :1]), lengths], -1)
