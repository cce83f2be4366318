"""The HumanML3D 263-dim motion features, both directions, and mean/std normalisation.

Layout of one frame (22 joints; KIT-ML's 21 joints give 251 with the same formulas):

    [0:1]     root_rot_vel  yaw change t -> t+1 as a half angle, arcsin(y of q[t+1] q[t]^-1)
    [1:3]     root_lin_vel  root xz displacement t -> t+1, rotated into the facing frame of t+1
    [3:4]     root_y        root height (m)
    [4:67]    ric           joints 1..21 relative to the root's xz, in the facing frame (y stays absolute)
    [67:193]  rot6d         local joint rotations 1..21 (per-chain IK) as the first two matrix columns
    [193:259] local_vel     all 22 joints' displacement t -> t+1, rotated into the facing frame of t
    [259:263] foot_contact  (l_ankle, l_foot, r_ankle, r_foot): squared displacement < 0.002 m^2 per frame

The per-frame facing rotation q[t] takes the body's forward direction to +z, with q[0] = identity. As in
HumanML3D it comes from the hip/shoulder facing with the IK's swapped hip pair, smoothed over time with a
Gaussian of sigma 20 frames. N position frames give N - 1 feature frames. See docs/motion.md.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from scipy.ndimage import gaussian_filter1d

from sopo_ray.errors import DataError
from sopo_ray.motion.quaternion import (
    Array,
    as_backend,
    backend,
    cont6d_to_quat,
    qbetween,
    qinv,
    qmul,
    qrot,
    quat_fix,
    quat_to_6d,
)
from sopo_ray.motion.skeleton import (
    FACE_JOINTS,
    FOOT_JOINTS_LEFT,
    FOOT_JOINTS_RIGHT,
    IK_FACE_JOINTS,
    NUM_JOINTS,
    facing_direction,
    forward_kinematics,
    inverse_kinematics,
)

FEATURE_DIM = 263
FOOT_CONTACT_THRESHOLD = 0.002
"""Squared per-frame displacement (m^2) under which a foot joint counts as in contact."""
FACING_SMOOTH_SIGMA = 20.0
"""Gaussian sigma (frames) of the temporal smoothing of the facing direction in the IK."""


def feature_slices(num_joints: int = NUM_JOINTS) -> dict[str, slice]:
    """Name -> slice of each feature block for a skeleton with `num_joints` joints (22: HumanML3D, 21: KIT)."""
    sizes = {"root_rot_vel": 1, "root_lin_vel": 2, "root_y": 1, "ric": 3 * (num_joints - 1),
             "rot6d": 6 * (num_joints - 1), "local_vel": 3 * num_joints, "foot_contact": 4}
    slices, start = {}, 0
    for name, size in sizes.items():
        slices[name] = slice(start, start + size)
        start += size
    return slices


FEATURE_SLICES: dict[str, slice] = feature_slices(NUM_JOINTS)


def joints_for_dim(dim: int) -> int:
    """Number of joints of a feature vector of size `dim` (263 -> 22, 251 -> 21)."""
    if dim < 23 or (dim + 1) % 12:
        raise DataError(f"feature size {dim} is not a HumanML3D layout (263 for 22 joints, 251 for KIT's 21)")
    return (dim + 1) // 12


def _root_rotation_and_position(features: Array) -> tuple[Array, Array]:
    """Integrate the root: yaw quaternions [..., T, 4] (world -> facing) and root positions [..., T, 3]."""
    xp = backend(features)
    rot_vel = features[..., 0]
    angle = xp.concatenate([xp.zeros_like(rot_vel[..., :1]), xp.cumsum(rot_vel[..., :-1], -1)], -1)
    zero = xp.zeros_like(angle)
    root_quat = xp.stack([xp.cos(angle), zero, xp.sin(angle), zero], -1)
    step = xp.stack([features[..., :-1, 1], xp.zeros_like(features[..., :-1, 1]), features[..., :-1, 2]], -1)
    step = xp.concatenate([xp.zeros_like(step[..., :1, :]), step], -2)
    root_pos = xp.cumsum(qrot(qinv(root_quat), step), -2)
    root_pos = xp.stack([root_pos[..., 0], features[..., 3], root_pos[..., 2]], -1)
    return root_quat, root_pos


def root_trajectory(features: Array) -> tuple[Array, Array]:
    """(heading [..., T] in radians, root position [..., T, 3]) of each frame in the clip's start frame: frame 0 at
    the origin facing +z, integrated from the root velocities (numpy or torch)."""
    root_quat, root_pos = _root_rotation_and_position(features)
    return 2.0 * backend(features).arctan2(root_quat[..., 2], root_quat[..., 0]), root_pos


def _as_computed(features: Array) -> Array:
    """Numpy inputs are computed in float64 (returned in their own float dtype); torch keeps its dtype."""
    if backend(features) is np:
        return np.asarray(features, dtype=np.float64)
    return features


def _output(result: Array, features: Array) -> Array:
    if backend(features) is np:
        dtype = features.dtype if np.issubdtype(features.dtype, np.floating) else np.float32
        return result.astype(dtype)
    return result


def features_to_joints(features: Array) -> Array:
    """Joint positions [..., T, J, 3] from un-normalised features [..., T, D] (numpy or torch).

    Root yaw is integrated from the half-angle velocity, the root xz from the velocity rotated back into the
    world, and the other joints come from the root-relative positions (HumanML3D's `recover_from_ric`).
    """
    num_joints = joints_for_dim(features.shape[-1])
    f = _as_computed(features)
    xp = backend(f)
    root_quat, root_pos = _root_rotation_and_position(f)
    ric = f[..., 4:4 + 3 * (num_joints - 1)].reshape(tuple(f.shape[:-1]) + (num_joints - 1, 3))
    world = qrot(qinv(root_quat)[..., None, :], ric)
    offset = xp.stack([root_pos[..., 0], xp.zeros_like(root_pos[..., 0]), root_pos[..., 2]], -1)
    joints = xp.concatenate([root_pos[..., None, :], world + offset[..., None, :]], -2)
    return _output(joints, features)


def features_to_local_rotations(features: Array) -> tuple[Array, Array]:
    """(local rotations [..., T, 22, 4] wxyz, root positions [..., T, 3]) from 263-dim features.

    Index 0 is the integrated root (facing) rotation, 1..21 decode the 6D block; together with
    `forward_kinematics` this is HumanML3D's `recover_from_rot`.
    """
    if features.shape[-1] != FEATURE_DIM:
        raise DataError(f"rotation recovery needs the 22-joint layout ({FEATURE_DIM} dims), got {features.shape[-1]}")
    f = _as_computed(features)
    xp = backend(f)
    root_quat, root_pos = _root_rotation_and_position(f)
    rot6d = f[..., FEATURE_SLICES["rot6d"]].reshape(tuple(f.shape[:-1]) + (NUM_JOINTS - 1, 6))
    local = xp.concatenate([root_quat[..., None, :], cont6d_to_quat(rot6d)], -2)
    return _output(local, features), _output(root_pos, features)


def recover_from_rot(features: Array) -> Array:
    """Joint positions [..., T, 22, 3] by forward kinematics of the 6D rotations (instead of the ric block)."""
    local, root_pos = features_to_local_rotations(_as_computed(features))
    return _output(forward_kinematics(local, root_pos), features)


def _unit_or_previous(vectors: np.ndarray) -> np.ndarray:
    """Normalise [T, 3] rows; a zero row takes the previous valid direction (+z if none yet)."""
    norms = np.linalg.norm(vectors, axis=-1)
    valid = norms > 1e-9
    if not valid.any():
        return np.tile([0.0, 0.0, 1.0], (len(vectors), 1))
    last_valid = np.maximum.accumulate(np.where(valid, np.arange(len(vectors)), -1))
    first = int(np.argmax(valid))
    source = np.where(last_valid >= 0, last_valid, first)
    return vectors[source] / norms[source][:, None]


def align_joints(joints: np.ndarray) -> np.ndarray:
    """HumanML3D placement of a clip [N, 22, 3]: floor at the lowest joint, frame-0 root xz at the origin,
    rotated about y so that the frame-0 facing direction is +z. Returns float64."""
    p = np.array(joints, dtype=np.float64)
    p[..., 1] -= p[..., 1].min()
    p -= p[0, 0] * np.array([1.0, 0.0, 1.0])
    forward = _unit_or_previous(facing_direction(p[:1], FACE_JOINTS))
    turn = qbetween(forward, np.array([[0.0, 0.0, 1.0]]))
    return qrot(turn[:, None, :], p)


def _foot_contacts(p: np.ndarray, joint_ids: tuple[int, int]) -> np.ndarray:
    step = p[1:, list(joint_ids)] - p[:-1, list(joint_ids)]
    return ((step ** 2).sum(-1) < FOOT_CONTACT_THRESHOLD).astype(np.float64)


def joints_to_features(joints: np.ndarray) -> np.ndarray:
    """HumanML3D features [N - 1, 263] (float32) from joint positions [N, 22, 3] in metres, y up.

    Runs the whole HumanML3D processing: `align_joints` (floor, origin, face +z), then the smoothed facing
    rotations, ric, per-chain IK to 6D, velocities and foot contacts. The joints should have the target bone
    lengths (e.g. come from `forward_kinematics` with the default offsets); positions are kept as given.
    """
    joints = np.asarray(joints)
    if joints.ndim != 3 or joints.shape[1:] != (NUM_JOINTS, 3) or len(joints) < 2:
        raise DataError(f"joints_to_features needs joints of shape [N >= 2, 22, 3], got {tuple(joints.shape)}")
    if not np.isfinite(joints).all():
        raise DataError("joints_to_features got NaN or infinite joint positions; fix the motion that produced them")
    p = align_joints(joints)
    n = len(p)

    forward = gaussian_filter1d(facing_direction(p, IK_FACE_JOINTS), FACING_SMOOTH_SIGMA, axis=0, mode="nearest")
    root_quat = qbetween(_unit_or_previous(forward), np.tile([0.0, 0.0, 1.0], (n, 1)))
    root_quat[0] = (1.0, 0.0, 0.0, 0.0)
    local = quat_fix(inverse_kinematics(p, root_quat))
    rot6d = quat_to_6d(local[:, 1:]).reshape(n, -1)
    r_rot = local[:, 0]

    root_step = qrot(r_rot[1:], p[1:, 0] - p[:-1, 0])
    yaw_step = qmul(r_rot[1:], qinv(r_rot[:-1]))
    rot_vel = np.arcsin(np.clip(yaw_step[:, 2:3], -1.0, 1.0))

    relative = p - p[:, :1] * np.array([1.0, 0.0, 1.0])
    ric = qrot(r_rot[:, None], relative)
    local_vel = qrot(r_rot[:-1, None], p[1:] - p[:-1]).reshape(n - 1, -1)
    contacts = [_foot_contacts(p, FOOT_JOINTS_LEFT), _foot_contacts(p, FOOT_JOINTS_RIGHT)]

    features = np.concatenate([
        rot_vel, root_step[:, [0, 2]], ric[:-1, 0, 1:2], ric[:-1, 1:].reshape(n - 1, -1), rot6d[:-1],
        local_vel, *contacts,
    ], axis=-1)
    return features.astype(np.float32)


def group_mean_std(frames: np.ndarray, min_std: float = 1e-5) -> tuple[np.ndarray, np.ndarray]:
    """HumanML3D-style statistics of feature frames [N, D]: per-dimension mean, and per-dimension std
    replaced by the mean std of its feature block (as `Std.npy`), floored at `min_std`."""
    frames = np.asarray(frames, dtype=np.float64)
    if frames.ndim != 2 or len(frames) < 2:
        raise DataError(f"group_mean_std needs feature frames [N >= 2, D], got {tuple(frames.shape)}")
    mean = frames.mean(0)
    per_dim = frames.std(0)
    std = np.empty_like(per_dim)
    for block in feature_slices(joints_for_dim(frames.shape[1])).values():
        std[block] = max(per_dim[block].mean(), min_std)
    return mean.astype(np.float32), std.astype(np.float32)


class Normalizer:
    """x_n = (x - mean) / std and back, for numpy arrays or torch tensors of shape [..., D]."""

    def __init__(self, mean: np.ndarray, std: np.ndarray) -> None:
        mean = np.asarray(mean, dtype=np.float32)
        std = np.asarray(std, dtype=np.float32)
        if mean.ndim != 1 or mean.shape != std.shape:
            raise DataError(f"mean and std must be 1-D of equal size, got {mean.shape} and {std.shape}")
        if not (np.isfinite(mean).all() and np.isfinite(std).all() and (std > 0).all()):
            raise DataError("std has zero, negative or non-finite entries; recompute it with group_mean_std")
        self.mean = mean
        self.std = std

    @property
    def dim(self) -> int:
        """Feature size D."""
        return int(self.mean.shape[0])

    def _check(self, x: Array) -> None:
        if x.shape[-1] != self.dim:
            raise DataError(f"normaliser has {self.dim} dims but the motion has {x.shape[-1]}")

    def normalize(self, x: Array) -> Array:
        """(x - mean) / std."""
        self._check(x)
        return (x - as_backend(self.mean, x)) / as_backend(self.std, x)

    def denormalize(self, x: Array) -> Array:
        """x * std + mean."""
        self._check(x)
        return x * as_backend(self.std, x) + as_backend(self.mean, x)


def load_mean_std(folder: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """(mean, std) float32 from `Mean.npy`/`Std.npy` (HumanML3D layout) or `mean.npy`/`std.npy` in `folder`."""
    folder = Path(folder)
    for mean_name, std_name in (("Mean.npy", "Std.npy"), ("mean.npy", "std.npy")):
        if (folder / mean_name).is_file() and (folder / std_name).is_file():
            mean = np.load(folder / mean_name, allow_pickle=False).astype(np.float32)
            std = np.load(folder / std_name, allow_pickle=False).astype(np.float32)
            return mean, std
    raise DataError(f"no Mean.npy/Std.npy in {folder}; point to the dataset folder that holds them")

