"""Skeleton constants, quaternion helpers, forward/inverse kinematics (numpy and torch)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sopo_ray.errors import DataError
from sopo_ray.motion.features import recover_from_rot
from sopo_ray.motion.quaternion import (
    cont6d_to_quat,
    matrix_to_quat,
    qbetween,
    qinv,
    qmul,
    qrot,
    quat_fix,
    quat_from_axis_angle,
    quat_to_6d,
    quat_to_matrix,
)
from sopo_ray.motion.skeleton import (
    BONE_LENGTHS,
    FACE_JOINTS,
    JOINT_NAMES,
    KINEMATIC_CHAIN,
    OFFSETS,
    PARENTS,
    RAW_OFFSETS,
    bone_lengths,
    facing_direction,
    forward_kinematics,
    inverse_kinematics,
)


def random_quats(rng: np.random.Generator, shape: tuple[int, ...], max_angle: float = np.pi) -> np.ndarray:
    axis = rng.normal(size=shape + (3,))
    return quat_from_axis_angle(axis, rng.uniform(-max_angle, max_angle, size=shape))


def same_rotation(q: np.ndarray, r: np.ndarray) -> float:
    """Largest distance between q and r up to the quaternion sign."""
    return float(np.minimum(np.abs(q - r).max(-1), np.abs(q + r).max(-1)).max())


def test_skeleton_tables_are_consistent():
    assert len(JOINT_NAMES) == len(PARENTS) == len(RAW_OFFSETS) == len(BONE_LENGTHS) == 22
    for chain in KINEMATIC_CHAIN:
        for parent, child in zip(chain[:-1], chain[1:], strict=True):
            assert PARENTS[child] == parent
    assert sorted(j for chain in KINEMATIC_CHAIN for j in chain[1:]) == list(range(1, 22))
    np.testing.assert_allclose(np.linalg.norm(OFFSETS, axis=1), BONE_LENGTHS)
    for name, idx in (("left", 1), ("right", 2)):
        assert JOINT_NAMES[idx] == f"{name}_hip"


def test_rest_pose_stands_upright_facing_plus_z():
    rest = np.tile([1.0, 0.0, 0.0, 0.0], (1, 22, 1))
    joints = forward_kinematics(rest, np.array([[0.0, 0.93, 0.0]]))[0]
    head, l_ankle, l_wrist, r_wrist = joints[15], joints[7], joints[20], joints[21]
    assert head[1] > joints[0, 1] + 0.5 > l_ankle[1] + 0.5
    assert l_wrist[0] > 0 > r_wrist[0]
    np.testing.assert_allclose(bone_lengths(joints), BONE_LENGTHS, atol=1e-12)
    forward = facing_direction(joints, FACE_JOINTS)
    np.testing.assert_allclose(forward / np.linalg.norm(forward), [0.0, 0.0, 1.0], atol=1e-12)


def test_quaternion_helpers_agree_with_matrices():
    rng = np.random.default_rng(0)
    q = random_quats(rng, (256,))
    half_turns = quat_from_axis_angle(rng.normal(size=(16, 3)), np.full(16, np.pi))
    q = np.concatenate([q, half_turns, [[1.0, 0.0, 0.0, 0.0]]])
    v = rng.normal(size=(len(q), 3))
    m = quat_to_matrix(q)
    np.testing.assert_allclose(qrot(q, v), np.einsum("nij,nj->ni", m, v), atol=1e-12)
    assert same_rotation(matrix_to_quat(m), q) < 1e-12
    assert same_rotation(cont6d_to_quat(quat_to_6d(q)), q) < 1e-12
    np.testing.assert_allclose(qmul(q, qinv(q)), np.tile([1.0, 0, 0, 0], (len(q), 1)), atol=1e-12)
    r = random_quats(rng, (len(q),))
    np.testing.assert_allclose(quat_to_matrix(qmul(q, r)), m @ quat_to_matrix(r), atol=1e-12)


def test_qbetween_handles_opposite_and_equal_directions():
    a = np.array([[0.0, 0.0, -1.0], [0.0, -1.0, 0.0], [1.0, 2.0, 3.0], [0.3, 0.0, 0.4]])
    b = np.array([[0.0, 0.0, 1.0], [0.0, 1.0, 0.0], [1.0, 2.0, 3.0], [-0.3, 0.0, -0.4]])
    q = qbetween(a, b)
    assert np.isfinite(q).all()
    unit = lambda x: x / np.linalg.norm(x, axis=-1, keepdims=True)  # noqa: E731
    np.testing.assert_allclose(qrot(q, unit(a)), unit(b), atol=1e-12)
    # A horizontal half turn is a turn about the vertical, as a facing rotation must be.
    assert abs(q[0, 2]) == pytest.approx(1.0) and abs(q[3, 2]) == pytest.approx(1.0)


def test_quat_fix_removes_sign_flips():
    angles = np.linspace(0, 4 * np.pi, 50)
    q = quat_from_axis_angle(np.array([0.0, 1.0, 0.0]), angles)
    flipped = q * np.where(np.arange(50) % 3 == 0, -1.0, 1.0)[:, None]
    fixed = quat_fix(flipped)
    assert ((fixed[1:] * fixed[:-1]).sum(-1) > 0).all()
    assert same_rotation(fixed, q) < 1e-12


def test_fk_from_6d_rotations_matches_real_joints(humanml3d_sample):
    features = np.load(humanml3d_sample / "new_joint_vecs" / "012314.npy")
    joints = np.load(humanml3d_sample / "new_joints" / "012314.npy")
    # Measured 1.55e-6 m (float64 numpy).
    assert np.abs(recover_from_rot(features) - joints).max() < 1e-5


def test_real_bone_lengths_are_the_target_skeleton(humanml3d_sample):
    joints = np.load(humanml3d_sample / "new_joints" / "012314.npy").astype(np.float64)
    lengths = bone_lengths(joints)
    assert lengths.std(0).max() < 1e-6
    # Measured 1.42e-6 m.
    assert np.abs(lengths - BONE_LENGTHS).max() < 5e-6


def test_inverse_kinematics_rebuilds_forward_kinematics():
    rng = np.random.default_rng(1)
    local = random_quats(rng, (20, 22), max_angle=2.5)
    root = rng.normal(size=(20, 3))
    joints = forward_kinematics(local, root)
    np.testing.assert_allclose(bone_lengths(joints), np.broadcast_to(BONE_LENGTHS, (20, 22)), atol=1e-12)
    facing = random_quats(rng, (20,))
    rebuilt = forward_kinematics(inverse_kinematics(joints, facing), root)
    np.testing.assert_allclose(rebuilt, joints, atol=1e-10)


def test_forward_kinematics_torch_matches_numpy_and_has_gradients():
    rng = np.random.default_rng(2)
    local = random_quats(rng, (3, 5, 22), max_angle=1.0)
    root = rng.normal(size=(3, 5, 3))
    expected = forward_kinematics(local, root)
    local_t = torch.tensor(local, requires_grad=True)
    got = forward_kinematics(local_t, torch.tensor(root))
    assert got.shape == (3, 5, 22, 3)
    np.testing.assert_allclose(got.detach().numpy(), expected, atol=1e-12)
    got[..., 1].sum().backward()
    assert local_t.grad is not None and torch.isfinite(local_t.grad).all() and local_t.grad.abs().sum() > 0


def test_torch_quaternion_helpers_match_numpy():
    rng = np.random.default_rng(3)
    q = np.concatenate([random_quats(rng, (64,)), quat_from_axis_angle(rng.normal(size=(4, 3)), np.full(4, np.pi))])
    a = np.concatenate([rng.normal(size=(64, 3)), [[0, 0, -1.0], [0, -1.0, 0], [1.0, 0, 0], [0, 0, 1.0]]])
    b = np.concatenate([rng.normal(size=(64, 3)), [[0, 0, 1.0], [0, 1.0, 0], [-1.0, 0, 0], [0, 0, 1.0]]])
    t = torch.tensor
    np.testing.assert_allclose(matrix_to_quat(t(quat_to_matrix(q))).numpy(), matrix_to_quat(quat_to_matrix(q)),
                               atol=1e-12)
    np.testing.assert_allclose(cont6d_to_quat(t(quat_to_6d(q))).numpy(), cont6d_to_quat(quat_to_6d(q)), atol=1e-12)
    np.testing.assert_allclose(qbetween(t(a), t(b)).numpy(), qbetween(a, b), atol=1e-12)
    sequence = q[:, None] * np.where(rng.random((len(q), 1)) < 0.5, -1.0, 1.0)[..., None]
    np.testing.assert_array_equal(quat_fix(t(sequence)).numpy(), quat_fix(sequence))
    np.testing.assert_allclose(qrot(t(q), t(a)).numpy(), qrot(q, a), atol=1e-12)


def test_forward_kinematics_checks_shapes_and_normalises():
    with pytest.raises(DataError, match="22, 4"):
        forward_kinematics(np.zeros((4, 21, 4)), np.zeros((4, 3)))
    rest = np.tile([1.0, 0.0, 0.0, 0.0], (2, 22, 1)).astype(np.float32)
    scaled = forward_kinematics(3.0 * rest, np.zeros((2, 3), np.float32))
    assert scaled.dtype == np.float32
    np.testing.assert_allclose(scaled, forward_kinematics(rest, np.zeros((2, 3), np.float32)), atol=1e-6)
