"""The caption oracle: does a motion do what its structured parameters (and so its captions) say?

`oracle_score(motion, params)` measures the motion itself (features [T, 263] or joints [T, 22, 3]) and checks
one boolean clause per stated fact: for each segment of the parameters, in its share of the clip (slightly
widened for events), e.g. the net displacement direction in the body frame at the segment's start, the walking
speed band, the turn angle, which hand is above the head and how many times, clap and punch counts, squat depth,
jump flights, the final root height of kneeling or sitting. The score is the fraction of clauses satisfied.

Thresholds are bands with margins around what the generator produces, and events are counted with hysteresis on
lightly smoothed signals, so the oracle also works on generated (noisy) motions and on any clip length. The
clause list is documented in docs/data.md.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy.ndimage import gaussian_filter1d

from sopo_ray.data.synthetic.pose import FPS
from sopo_ray.data.synthetic.space import segment_frames
from sopo_ray.errors import DataError
from sopo_ray.motion.features import align_joints, features_to_joints

HEAD, L_WRIST, R_WRIST, L_SHOULDER, R_SHOULDER = 15, 20, 21, 16, 17
L_KNEE, R_KNEE, L_ANKLE, R_ANKLE = 4, 5, 7, 8
FEET = [7, 8, 10, 11]
EVENT_MARGIN = 0.06
"""Events (raises, claps, kicks, ...) count when their middle lies in the segment's share of the clip widened by
this fraction of the clip on each side."""

# Mean root speed (m/s) over the middle of a locomotion segment.
SPEED_BANDS: dict[str, tuple[float, float]] = {
    "walk_slow": (0.3, 1.15), "walk_normal": (0.7, 1.85), "walk_fast": (1.2, 2.7), "jog": (1.6, 3.7),
    "run": (2.5, 8.0),
}
TURN_BANDS = {90: (45.0, 135.0), 180: (135.0, 250.0)}
SQUAT_ROOT = 0.76
"""A squat goes below this root height (m); standing is about 0.93."""


@dataclass
class OracleResult:
    """score: fraction of clauses satisfied, in [0, 1]; clauses: clause name -> satisfied; values: clause name ->
    the measured quantity it was decided on (metres, m/s, degrees or a count)."""

    score: float
    clauses: dict[str, bool]
    values: dict[str, float] = field(default_factory=dict)


class _Motion:
    """Per-frame measurements of a canonical clip (floor at y = 0, frame 0 at the origin facing +z)."""

    def __init__(self, joints: np.ndarray) -> None:
        j = align_joints(joints)
        # A robust floor: generated clips may have a stray low frame.
        j[..., 1] -= np.percentile(j[:, FEET, 1].min(1), 2)
        j = gaussian_filter1d(j, 1.0, axis=0, mode="nearest")
        self.j = j
        self.n = len(j)
        across = (j[:, 2] - j[:, 1]) + (j[:, R_SHOULDER] - j[:, L_SHOULDER])
        forward = np.stack([across[:, 2], -across[:, 0]], -1)  # (x, z) of y x across
        self.yaw = gaussian_filter1d(np.unwrap(np.arctan2(forward[:, 0], forward[:, 1])), 2.0, mode="nearest")
        self.root = j[:, 0, [0, 2]]
        speed = np.linalg.norm(np.diff(gaussian_filter1d(self.root, 2.0, axis=0, mode="nearest"), axis=0), axis=1)
        self.speed = np.concatenate([speed, speed[-1:]]) * FPS
        cos, sin = np.cos(self.yaw), np.sin(self.yaw)
        rel = j[:, :, [0, 2]] - self.root[:, None]
        # Body frame of each frame: x to the body's left, z forward.
        self.local_x = rel[..., 0] * cos[:, None] - rel[..., 1] * sin[:, None]
        self.local_z = rel[..., 0] * sin[:, None] + rel[..., 1] * cos[:, None]

    def height(self, joint: int) -> np.ndarray:
        return self.j[:, joint, 1]

    def displacement(self, a: int, b: int) -> tuple[float, float]:
        """(distance, direction in degrees: 0 forward, +90 left) of the root from frame a to b - 1, in the body
        frame at a."""
        d = self.root[b - 1] - self.root[a]
        yaw = self.yaw[a]
        x = d[0] * np.cos(yaw) - d[1] * np.sin(yaw)
        z = d[0] * np.sin(yaw) + d[1] * np.cos(yaw)
        return float(np.hypot(x, z)), float(np.degrees(np.arctan2(x, z)))

    def turn(self, a: int, b: int) -> float:
        """Heading change in degrees (+ = left) from frame a to b - 1."""
        return float(np.degrees(self.yaw[b - 1] - self.yaw[a]))


def count_events(signal: np.ndarray, enter: float, leave: float, lo: int, hi: int, min_frames: int = 2) -> int:
    """Number of times `signal` rises above `enter` and stays up (until it drops below `leave`) for at least
    `min_frames`, counting only events whose middle frame lies in [lo, hi)."""
    up, start, count = False, 0, 0
    for t, value in enumerate(np.append(signal, -np.inf)):
        if not up and value > enter:
            up, start = True, t
        elif up and value < leave:
            up = False
            if t - start >= min_frames and lo <= (start + t - 1) // 2 < hi:
                count += 1
    return count


def _swings(x: np.ndarray, amplitude: float) -> int:
    """Number of direction reversals of x, each after a travel of at least `amplitude` (hysteresis)."""
    if len(x) < 3:
        return 0
    count, direction, low, high = 0, 0, x[0], x[0]
    for value in x[1:]:
        if direction == 0:
            low, high = min(low, value), max(high, value)
            if high - low >= amplitude:
                direction, extreme = (1 if value == high else -1), value
        elif direction * (value - extreme) > 0:
            extreme = value
        elif abs(value - extreme) >= amplitude:
            count, direction, extreme = count + 1, -direction, value
    return count


def _hands(seg: dict) -> tuple[list[int], list[int]]:
    """(wrists the segment uses, wrists it does not) from its `hand` attribute."""
    wrists = {"left": [L_WRIST], "right": [R_WRIST], "both": [L_WRIST, R_WRIST]}[seg["hand"]]
    return wrists, [w for w in (L_WRIST, R_WRIST) if w not in wrists]


def _reach(m: _Motion, wrist: int) -> np.ndarray:
    """How far a wrist is in front of its shoulder (m), in the body frame."""
    shoulder = L_SHOULDER if wrist == L_WRIST else R_SHOULDER
    return m.local_z[:, wrist] - m.local_z[:, shoulder]


def _segment_clauses(m: _Motion, seg: dict, core: tuple[int, int], wide: tuple[int, int]) -> dict[str, tuple[bool,
                                                                                                            float]]:
    """Clause name -> (satisfied, measured value) for one segment."""
    a, b = core
    lo, hi = wide
    action = seg["action"]
    out: dict[str, tuple[bool, float]] = {}
    head = m.height(HEAD)

    def above_head(wrist: int) -> np.ndarray:
        return gaussian_filter1d(m.height(wrist) - head, 1.0)

    if action in ("walk", "jog", "run"):
        span = b - a
        middle = m.speed[a + span // 5: b - span // 5] if span >= 5 else m.speed[a:b]
        speed = float(middle.mean())
        band = SPEED_BANDS[f"walk_{seg['speed']}" if action == "walk" else action]
        out["speed"] = (band[0] <= speed <= band[1], speed)
        distance, angle = m.displacement(a, b)
        turn = m.turn(a, b)
        if seg["direction"] in ("forward", "backward"):
            target = 0.0 if seg["direction"] == "forward" else 180.0
            off = abs((angle - target + 180.0) % 360.0 - 180.0)
            out["direction"] = (distance >= 0.3 and off <= 45.0, angle)
            out["straight"] = (abs(turn) <= 45.0, turn)
        else:
            sign = 1.0 if seg["direction"] == "left" else -1.0
            out["curve"] = (sign * turn >= 35.0 and distance >= 0.5, turn)
    elif action == "sidestep":
        distance, angle = m.displacement(a, b)
        target = 90.0 if seg["direction"] == "left" else -90.0
        off = abs((angle - target + 180.0) % 360.0 - 180.0)
        out["direction"] = (distance >= 0.3 and off <= 45.0, angle)
        out["facing"] = (abs(m.turn(a, b)) <= 40.0, m.turn(a, b))
    elif action == "turn":
        turn = m.turn(a, b)
        sign = 1.0 if seg["direction"] == "left" else -1.0
        low, high = TURN_BANDS[seg["angle"]]
        out["direction"] = (sign * turn >= 30.0, turn)
        out["angle"] = (low <= abs(turn) <= high, abs(turn))
        out["in_place"] = (m.displacement(a, b)[0] <= 1.0, m.displacement(a, b)[0])
    elif action in ("wave", "raise", "throw"):
        used, free = _hands(seg)
        above = np.min([above_head(w) for w in used], axis=0)
        if action == "wave":
            up = above[lo:hi] > 0.0
            out["hand_up"] = (up.mean() >= 0.25, float(up.mean()))
            wrist = used[0]
            lateral = gaussian_filter1d(m.local_x[:, wrist], 1.0)[lo:hi][up]
            swings = _swings(lateral, 0.05)
            out["waving"] = (swings >= 2, float(swings))
        elif action == "raise":
            count = count_events(above, 0.05, -0.05, lo, hi)
            out["count"] = (count == seg["count"], float(count))
        else:
            first_up = np.flatnonzero(above[lo:hi] > 0.0)
            out["windup"] = (len(first_up) > 0, float(above[lo:hi].max()))
            after = lo + (first_up[0] if len(first_up) else hi - lo)
            reach = float(_reach(m, used[0])[after:hi].max()) if after < hi else 0.0
            out["release"] = (reach >= 0.35, reach)
        if free:
            other = float((above_head(free[0])[lo:hi] > 0.0).mean())
            out["other_hand_down"] = (other <= 0.1, other)
    elif action == "clap":
        gap = np.linalg.norm(m.j[:, L_WRIST] - m.j[:, R_WRIST], axis=1)
        in_front = (m.local_z[:, L_WRIST] + m.local_z[:, R_WRIST]) / 2 > 0.15
        closeness = np.where(in_front, -gap, -1.0)
        count = count_events(closeness, -0.2, -0.27, lo, hi, min_frames=1)
        out["count"] = (count == seg["count"], float(count))
    elif action == "punch":
        used, free = _hands(seg)
        count = count_events(gaussian_filter1d(_reach(m, used[0]), 1.0), 0.43, 0.35, lo, hi, min_frames=1)
        out["count"] = (count == seg["count"], float(count))
        other = count_events(gaussian_filter1d(_reach(m, free[0]), 1.0), 0.43, 0.35, lo, hi, min_frames=1)
        out["other_hand_still"] = (other == 0, float(other))
    elif action == "squat":
        root = gaussian_filter1d(m.height(0), 1.0)
        count = count_events(-root, -SQUAT_ROOT, -0.84, lo, hi)
        out["count"] = (count == seg["count"], float(count))
        out["deep"] = (float(root[lo:hi].min()) <= SQUAT_ROOT, float(root[lo:hi].min()))
    elif action == "jump":
        feet = m.j[:, FEET, 1].min(1)
        count = count_events(feet, 0.07, 0.03, lo, hi)
        out["count"] = (count == seg["count"], float(count))
        distance, angle = m.displacement(a, b)
        forward = distance * np.cos(np.radians(angle))
        if seg["direction"] == "forward":
            out["direction"] = (forward >= 0.3 * seg["count"], forward)
        else:
            out["direction"] = (distance <= 0.3 + 0.15 * seg["count"], distance)
    elif action == "kick":
        kick, other = (L_ANKLE, R_ANKLE) if seg["leg"] == "left" else (R_ANKLE, L_ANKLE)
        lifted = np.where(m.local_z[:, kick] > 0.2, m.height(kick), 0.0)
        count = count_events(gaussian_filter1d(lifted, 1.0), 0.4, 0.25, lo, hi)
        out["count"] = (count == seg["count"], float(count))
        other_max = float(m.height(other)[lo:hi].max())
        out["other_leg_down"] = (other_max <= 0.3, other_max)
    elif action in ("kneel", "sit"):
        end = slice(max(a, b - max(2, (b - a) // 10)), b)
        root = float(m.height(0)[end].mean())
        knees = np.array([m.height(L_KNEE)[end].mean(), m.height(R_KNEE)[end].mean()])
        if action == "kneel":
            out["low"] = (root <= 0.7, root)
            out["knee_down"] = (knees.min() <= 0.15, float(knees.min()))
        else:
            out["seated"] = (0.3 <= root <= 0.72, root)
            out["knees_up"] = (knees.min() >= 0.3, float(knees.min()))
    else:
        raise DataError(f"oracle: unknown action {action!r} in the parameters")
    return out


def oracle_score(motion: np.ndarray, params: dict) -> OracleResult:
    """Check a motion (features [T, 263] or joints [T, 22, 3]) against structured parameters."""
    motion = np.asarray(motion, dtype=np.float64)
    if motion.ndim == 2 and motion.shape[1] == 263:
        joints = features_to_joints(motion)
    elif motion.ndim == 3 and motion.shape[1:] == (22, 3):
        joints = motion
    else:
        raise DataError(f"oracle_score needs features [T, 263] or joints [T, 22, 3], got {tuple(motion.shape)}")
    if len(joints) < 4 or not np.isfinite(joints).all():
        return OracleResult(0.0, {"valid_motion": False}, {"valid_motion": float(len(joints))})
    m = _Motion(joints)
    sizes = segment_frames(params["fractions"], m.n)
    edges = np.concatenate([[0], np.cumsum(sizes)])
    margin = int(round(EVENT_MARGIN * m.n))
    clauses: dict[str, bool] = {}
    values: dict[str, float] = {}
    for i, seg in enumerate(params["segments"]):
        a, b = int(edges[i]), int(edges[i + 1])
        wide = (max(0, a - margin), min(m.n, b + margin))
        for name, (ok, value) in _segment_clauses(m, seg, (a, max(b, a + 2)), wide).items():
            key = f"{i}:{seg['action']}.{name}"
            clauses[key] = bool(ok)
            values[key] = float(value)
    return OracleResult(sum(clauses.values()) / len(clauses), clauses, values)
