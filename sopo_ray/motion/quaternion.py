"""Quaternion and continuous-6D rotation helpers for numpy arrays and torch tensors alike.

Quaternions are (w, x, y, z), Hamilton product, rotating column vectors. Every function works on the trailing
axis (4 for quaternions, 3 for vectors, 6 for 6D, 3x3 for matrices) and broadcasts over the leading axes. The
backend is picked from the first argument: torch tensors in, torch tensors out (differentiable); anything else
goes through numpy.
"""

from __future__ import annotations

from types import ModuleType
from typing import Any

import numpy as np

Array = Any  # np.ndarray or torch.Tensor; the functions keep whichever they are given

_EPS = 1e-12


def backend(x: Array) -> ModuleType:
    """`torch` for a torch tensor, else `numpy` (without importing torch for numpy callers)."""
    if type(x).__module__.startswith("torch"):
        import torch

        return torch
    return np


def as_backend(values: Array, like: Array) -> Array:
    """`values` as an array of `like`'s backend, floating dtype and (for torch) device."""
    xp = backend(like)
    if xp is np:
        return np.asarray(values, dtype=np.result_type(like.dtype, np.float32))
    if backend(values) is xp:
        return values.to(dtype=like.dtype, device=like.device)
    return xp.as_tensor(np.asarray(values), dtype=like.dtype, device=like.device)


def cross(a: Array, b: Array) -> Array:
    """Cross product over the last axis (3), broadcasting."""
    xp = backend(a)
    ax, ay, az = a[..., 0], a[..., 1], a[..., 2]
    bx, by, bz = b[..., 0], b[..., 1], b[..., 2]
    return xp.stack([ay * bz - az * by, az * bx - ax * bz, ax * by - ay * bx], -1)


def dot(a: Array, b: Array) -> Array:
    """Dot product over the last axis, keeping it as size 1."""
    return (a * b).sum(-1)[..., None]


def normalize(v: Array, eps: float = _EPS) -> Array:
    """`v / |v|` over the last axis; zero vectors stay zero instead of becoming NaN."""
    xp = backend(v)
    norm = xp.sqrt((v * v).sum(-1))[..., None]
    return v / xp.where(norm > eps, norm, xp.ones_like(norm))


def qmul(q: Array, r: Array) -> Array:
    """Hamilton product q * r (apply r first, then q)."""
    xp = backend(q)
    w1, x1, y1, z1 = q[..., 0], q[..., 1], q[..., 2], q[..., 3]
    w2, x2, y2, z2 = r[..., 0], r[..., 1], r[..., 2], r[..., 3]
    return xp.stack([
        w1 * w2 - x1 * x2 - y1 * y2 - z1 * z2,
        w1 * x2 + x1 * w2 + y1 * z2 - z1 * y2,
        w1 * y2 - x1 * z2 + y1 * w2 + z1 * x2,
        w1 * z2 + x1 * y2 - y1 * x2 + z1 * w2,
    ], -1)


def qinv(q: Array) -> Array:
    """Inverse of a unit quaternion: (w, -x, -y, -z)."""
    sign = as_backend([1.0, -1.0, -1.0, -1.0], q)
    return q * sign


def qrot(q: Array, v: Array) -> Array:
    """Rotate vectors v [..., 3] by unit quaternions q [..., 4]: v + 2 (w u x v + u x (u x v))."""
    u = q[..., 1:]
    w = q[..., :1]
    uv = cross(u, v)
    return v + 2.0 * (w * uv + cross(u, uv))


def qbetween(a: Array, b: Array) -> Array:
    """The shortest-arc unit quaternion that rotates direction a onto direction b.

    For opposite directions (a 180 degree turn, where the axis is not defined) the axis is +y when it is
    perpendicular enough to a (a turn about the vertical, right for facing directions), else +x.
    """
    xp = backend(a)
    a = normalize(a)
    b = normalize(b)
    w = 1.0 + dot(a, b)
    q = xp.concatenate([w, cross(a, b)], -1)
    norm = xp.sqrt((q * q).sum(-1))[..., None]
    y_axis = as_backend([0.0, 1.0, 0.0], a)
    x_axis = as_backend([1.0, 0.0, 0.0], a)
    use_y = xp.abs(a[..., 1:2]) < 0.9
    helper = xp.where(use_y, y_axis, x_axis)
    axis = normalize(helper - dot(helper, a) * a)
    zero = xp.zeros_like(w)
    half_turn = xp.concatenate([zero, axis], -1)
    return xp.where(norm > 1e-6, q / xp.where(norm > 1e-6, norm, xp.ones_like(norm)), half_turn)


def quat_from_axis_angle(axis: Array, angle: Array | float) -> Array:
    """Unit quaternion for a rotation of `angle` radians [...] about `axis` [..., 3] (normalised here)."""
    xp = backend(axis)
    axis = normalize(axis)
    half = as_backend(angle, axis)[..., None] / 2.0
    return xp.concatenate([xp.cos(half) * xp.ones_like(axis[..., :1]), xp.sin(half) * axis], -1)


def quat_fix(q: Array) -> Array:
    """Make a quaternion sequence [T, ..., 4] continuous in time by flipping signs (q and -q are the same)."""
    xp = backend(q)
    flipped = (q[1:] * q[:-1]).sum(-1) < 0
    parity = xp.cumsum(xp.where(flipped, 1, 0), 0) % 2
    sign = xp.concatenate([xp.zeros_like(parity[:1]), parity], 0)
    return xp.where(sign[..., None] == 1, -q, q)


def quat_to_matrix(q: Array) -> Array:
    """Rotation matrices [..., 3, 3] from quaternions [..., 4] (normalised on the way)."""
    xp = backend(q)
    w, x, y, z = q[..., 0], q[..., 1], q[..., 2], q[..., 3]
    s = 2.0 / (q * q).sum(-1)
    rows = [
        [1 - s * (y * y + z * z), s * (x * y - w * z), s * (x * z + w * y)],
        [s * (x * y + w * z), 1 - s * (x * x + z * z), s * (y * z - w * x)],
        [s * (x * z - w * y), s * (y * z + w * x), 1 - s * (x * x + y * y)],
    ]
    return xp.stack([xp.stack(r, -1) for r in rows], -2)


def matrix_to_quat(m: Array) -> Array:
    """Unit quaternions [..., 4] (either sign) from rotation matrices [..., 3, 3].

    Shepperd's method: of the four algebraically equal formulas, each sample uses the one with the largest
    denominator, so the result is accurate for every rotation, 180 degree turns included.
    """
    xp = backend(m)
    m00, m01, m02 = m[..., 0, 0], m[..., 0, 1], m[..., 0, 2]
    m10, m11, m12 = m[..., 1, 0], m[..., 1, 1], m[..., 1, 2]
    m20, m21, m22 = m[..., 2, 0], m[..., 2, 1], m[..., 2, 2]
    denominators = xp.stack([1 + m00 + m11 + m22, 1 + m00 - m11 - m22,
                             1 - m00 + m11 - m22, 1 - m00 - m11 + m22], -1)
    candidates = xp.stack([
        xp.stack([1 + m00 + m11 + m22, m21 - m12, m02 - m20, m10 - m01], -1),
        xp.stack([m21 - m12, 1 + m00 - m11 - m22, m01 + m10, m02 + m20], -1),
        xp.stack([m02 - m20, m01 + m10, 1 - m00 + m11 - m22, m12 + m21], -1),
        xp.stack([m10 - m01, m02 + m20, m12 + m21, 1 - m00 - m11 + m22], -1),
    ], -2)
    best = xp.argmax(denominators, -1)[..., None]
    if xp is np:
        chosen = np.take_along_axis(candidates, best[..., None], -2)[..., 0, :]
        denom = np.take_along_axis(denominators, best, -1)
    else:
        chosen = xp.take_along_dim(candidates, best[..., None], -2)[..., 0, :]
        denom = xp.take_along_dim(denominators, best, -1)
    return chosen / (2.0 * xp.sqrt(xp.clip(denom, _EPS, None)))


def quat_to_6d(q: Array) -> Array:
    """Continuous 6D representation: the first two rotation-matrix columns, [R00, R10, R20, R01, R11, R21]."""
    m = quat_to_matrix(q)
    return backend(q).concatenate([m[..., 0], m[..., 1]], -1)


def cont6d_to_matrix(d6: Array) -> Array:
    """Rotation matrices [..., 3, 3] from 6D [..., 6] by Gram-Schmidt: x = a/|a|, z = x cross b, y = z cross x."""
    xp = backend(d6)
    x = normalize(d6[..., :3])
    z = normalize(cross(x, d6[..., 3:]))
    y = cross(z, x)
    return xp.stack([x, y, z], -1)


def cont6d_to_quat(d6: Array) -> Array:
    """Unit quaternions [..., 4] from 6D [..., 6]."""
    return matrix_to_quat(cont6d_to_matrix(d6))
