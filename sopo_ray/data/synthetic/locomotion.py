"""Locomotion actions as joint-angle curves: walk / jog / run (forward, backwards, curving left or right),
sidesteps, and turning on the spot.

Legs follow foot paths: in stance a foot moves back under the body at the walking speed, in swing it arcs
forward; leg inverse kinematics turns the paths into hip and knee angles, and the pelvis rides as high as the
stance legs allow (the bob of an inverted pendulum). `pose.pose_joints` then plants the stance foot, so the
body travels at the stride's speed and the feet do not slide. Every action starts and ends in the neutral
standing pose (its amplitudes ramp in and out), so actions chain.
"""

from __future__ import annotations

import numpy as np
from scipy.ndimage import gaussian_filter1d

from sopo_ray.data.synthetic.curves import envelope, phase, ramp, smoothstep
from sopo_ray.data.synthetic.pose import FPS, NEUTRAL, Style, Track, flat_foot, leg_ik
from sopo_ray.motion.skeleton import BONE_LENGTHS

# Gait shapes: stride frequency (Hz, one stride = two steps), speed (m/s), share of the cycle a foot is on the
# floor, swing clearance (m) and when in the swing it peaks, smallest stance knee bend, arm swing, elbow bend and
# trunk lean (degrees).
GAITS: dict[str, dict[str, float]] = {
    "walk_slow": dict(freq=0.75, speed=0.8, duty=0.62, lift=0.08, lift_at=0.5, knee=6.0, arm=12.0, elbow=16.0,
                      lean=2.0),
    "walk_normal": dict(freq=0.92, speed=1.25, duty=0.6, lift=0.1, lift_at=0.5, knee=6.0, arm=17.0, elbow=20.0,
                        lean=3.0),
    "walk_fast": dict(freq=1.04, speed=1.75, duty=0.58, lift=0.12, lift_at=0.45, knee=8.0, arm=24.0, elbow=28.0,
                      lean=5.0),
    "jog": dict(freq=1.35, speed=2.6, duty=0.45, lift=0.26, lift_at=0.38, knee=16.0, arm=30.0, elbow=85.0,
                lean=8.0),
    "run": dict(freq=1.5, speed=3.8, duty=0.36, lift=0.38, lift_at=0.35, knee=18.0, arm=44.0, elbow=90.0,
                lean=13.0),
    "sidestep": dict(freq=0.85, speed=0.45, duty=0.55, lift=0.06, lift_at=0.5, knee=10.0, arm=0.0, elbow=10.0,
                     lean=0.0),
    "step_in_place": dict(freq=0.8, speed=0.0, duty=0.6, lift=0.07, lift_at=0.5, knee=8.0, arm=0.0, elbow=10.0,
                          lean=0.0),
}
_HALF_WIDTH = 0.1
"""Distance of each foot from the body's midline (m)."""
_HEEL_RISE = 0.06
"""How far the heel rises at push-off (m)."""
_FOOT = BONE_LENGTHS[10]
_TOE_DROP = _FOOT * np.sin(np.radians(20.0))
"""Height of the ankle above the toes of a foot standing flat (the rest pose tilts the foot 20 degrees)."""


def _hermite(s: np.ndarray, p0: float | np.ndarray, m0: float | np.ndarray, p1: float | np.ndarray,
             m1: float | np.ndarray) -> np.ndarray:
    """Cubic Hermite curve on s in [0, 1] from p0 (slope m0) to p1 (slope m1)."""
    s2, s3 = s * s, s * s * s
    return (2 * s3 - 3 * s2 + 1) * p0 + (s3 - 2 * s2 + s) * m0 + (-2 * s3 + 3 * s2) * p1 + (s3 - s2) * m1


def foot_path(cycle: np.ndarray, stride: np.ndarray, gait: dict[str, float]) -> dict[str, np.ndarray]:
    """A foot's path over its gait phase (cycles; 0 = foot strike); `stride` [n] is the distance the body
    travels per cycle. Returns "along" (position along the travel direction), "lift" (swing height), "heel"
    (heel rise at push-off), "swing" (progress through the swing, 0 in stance) and "stance" (mask)."""
    u = cycle % 1.0
    duty = gait["duty"]
    stance = u < duty
    s = np.clip((u - duty) / (1.0 - duty), 0.0, 1.0)
    half = duty * stride / 2.0
    slope = -stride * (1.0 - duty)
    along = np.where(stance, half - stride * u, _hermite(s, -half, slope, half, slope))
    peak = gait["lift_at"]
    shape = np.where(s < peak, np.sin(0.5 * np.pi * s / peak), np.cos(0.5 * np.pi * (s - peak) / (1.0 - peak)))
    lift = np.where(stance, 0.0, gait["lift"] * shape**2)
    heel = np.where(stance, _HEEL_RISE * smoothstep((u / duty - 0.6) / 0.4), _HEEL_RISE * (1.0 - smoothstep(s / 0.3)))
    return {"along": along, "lift": lift, "heel": heel, "swing": s * ~stance, "stance": stance}


def gait_legs(track: Track, cycle: np.ndarray, env: np.ndarray, gait: dict[str, float], style: Style,
              direction: tuple[float, float] = (0.0, 1.0)) -> None:
    """Animate both legs along foot paths (phase 0 = left foot strike) travelling in `direction` (body-frame
    x, z), with amplitudes scaled by the envelope `env`; the pelvis height follows the legs' reach."""
    stride = env * gait["speed"] * style.amplitude / gait["freq"]
    thigh, shin = BONE_LENGTHS[4], BONE_LENGTHS[7]
    knee = np.radians(gait["knee"] * (0.3 + 0.7 * env))
    reach = np.sqrt(thigh**2 + shin**2 + 2 * thigh * shin * np.cos(knee))
    paths = {}
    height = np.full(track.n, np.inf)
    airborne = np.ones(track.n, dtype=bool)
    for side, offset, mirror in (("l", 0.0, 1.0), ("r", 0.5, -1.0)):
        path = foot_path(cycle + offset, stride, gait)
        raised = env * (path["lift"] + path["heel"])
        x = mirror * _HALF_WIDTH + direction[0] * path["along"]
        z = 0.03 + direction[1] * path["along"]
        paths[side] = (np.stack([x, raised, z], -1), path)
        airborne &= ~path["stance"]
        # The hip may rise only as far as both legs still reach their (raised) feet.
        lateral = x - mirror * 0.081
        height = np.minimum(height, raised + np.sqrt(np.maximum(reach**2 - lateral**2 - z**2, 0.01)))
    # Smooth the bob, never higher than the legs reach.
    height = np.minimum(gaussian_filter1d(height, 1.5, mode="nearest"), height + 0.01) + 0.063
    for side, (target, path) in paths.items():
        target[:, 1] -= height
        leg_ik(track, side, target)
        # Toes stay on the floor while the heel rises; toes up through the swing so they clear the floor.
        push = np.degrees(np.arcsin(np.clip((_TOE_DROP + env * path["heel"]) / _FOOT, -1.0, 1.0))
                          - np.arcsin(_TOE_DROP / _FOOT))
        track[f"{side}_ankle"] = flat_foot(track, side) + push - env * 12.0 * np.sin(np.pi * path["swing"])
    # The left foot carries the body for the first half of each cycle, the right foot for the second; in the
    # flight phase of running nobody touches the floor and the body keeps its speed.
    track.stance = np.where(cycle % 1.0 < 0.5, 0, 1)
    if gait["duty"] < 0.5:
        # A flight phase shorter than a frame still separates the two feet's contacts.
        airborne[1:] |= track.stance[1:] != track.stance[:-1]
    track.plant = np.where(airborne, 0.0, 1.0)
    velocity = stride * np.gradient(cycle) * np.sign(np.gradient(cycle)).clip(min=0)
    track.drift = np.stack([direction[0] * velocity, direction[1] * velocity], -1)


def _arms_and_trunk(track: Track, cycle: np.ndarray, env: np.ndarray, gait: dict[str, float], style: Style) -> None:
    for side, offset in (("l", 0.0), ("r", 0.5)):
        swing = env * style.arm_swing * gait["arm"] * np.cos(2 * np.pi * (cycle + offset))
        track[f"{side}_sh_flex"] = NEUTRAL[f"{side}_sh_flex"] - swing
        track[f"{side}_elbow"] = NEUTRAL[f"{side}_elbow"] + env * (gait["elbow"] - 0.3 * swing)
    track["spine_twist"] = 6.0 * env * np.cos(2 * np.pi * cycle) * (gait["arm"] > 0)
    track["spine_bend"] = track["spine_bend"] + env * (gait["lean"] + style.lean)


def gait_track(segment: dict, n: int, rng: np.random.Generator, style: Style) -> Track:
    """walk / jog / run: forward, backward (walk only: walking backwards), or curving left / right."""
    action, direction = segment["action"], segment["direction"]
    gait = GAITS[f"walk_{segment['speed']}" if action == "walk" else action]
    track = Track(n)
    ramp_frames = min(0.6 * FPS, n / 4)
    env = envelope(n, ramp_frames / n, ramp_frames / n)
    rate = gait["freq"] * style.tempo * rng.uniform(0.95, 1.05) / FPS
    cycle = phase(n, rate * (0.6 + 0.4 * env), start=float(rng.uniform(0.0, 1.0)))
    track["pelvis_yaw"] = -4.0 * env * np.cos(2 * np.pi * cycle)
    track["pelvis_roll"] = 2.0 * env * np.sin(2 * np.pi * cycle)
    if direction == "backward":
        cycle = -cycle
        gait = dict(gait, lean=-3.0)
    track["pelvis_pitch"] = env * 0.4 * gait["lean"]
    gait_legs(track, cycle, env, gait, style)
    _arms_and_trunk(track, cycle, env, gait, style)
    if direction in ("left", "right"):
        turn = rng.uniform(70.0, 120.0) * (1.0 if direction == "left" else -1.0)
        progress = np.cumsum(env)
        track.yaw = turn * progress / progress[-1]
        track["spine_side"] = -0.02 * turn * env * gait["lean"]
    return track


def sidestep_track(segment: dict, n: int, rng: np.random.Generator, style: Style) -> Track:
    """Sidesteps: the feet move sideways in alternation, the body keeps facing forward."""
    sign = 1.0 if segment["direction"] == "left" else -1.0
    gait = dict(GAITS["sidestep"], speed=GAITS["sidestep"]["speed"] * rng.uniform(0.85, 1.2))
    track = Track(n)
    env = envelope(n, min(0.15, 10.0 / n), min(0.15, 10.0 / n))
    rate = gait["freq"] * style.tempo * rng.uniform(0.9, 1.1) / FPS
    # The leading foot (on the side of travel) steps first.
    cycle = phase(n, rate, start=0.85 if sign > 0 else 0.35)
    gait_legs(track, cycle, env, gait, style, direction=(sign, 0.0))
    for side in ("l", "r"):
        track[f"{side}_sh_abd"] = NEUTRAL[f"{side}_sh_abd"] + env * 6.0
        track[f"{side}_elbow"] = NEUTRAL[f"{side}_elbow"] + env * 12.0
    track["pelvis_roll"] = env * 2.0 * np.sin(2 * np.pi * cycle)
    return track


def turn_track(segment: dict, n: int, rng: np.random.Generator, style: Style) -> Track:
    """Turning on the spot by `angle` degrees, stepping in place while the body rotates."""
    sign = 1.0 if segment["direction"] == "left" else -1.0
    angle = float(segment["angle"]) * rng.uniform(0.92, 1.06)
    track = Track(n)
    track.yaw = sign * angle * ramp(n, 0.12, 0.88)
    env = envelope(n, 0.1, 0.1, start=0.05, end=0.95)
    gait = GAITS["step_in_place"]
    cycle = phase(n, gait["freq"] * style.tempo * max(1.0, angle / 120.0) / FPS,
                  start=0.9 if sign > 0 else 0.4)
    gait_legs(track, cycle, env, gait, style)
    for side in ("l", "r"):
        track[f"{side}_elbow"] = NEUTRAL[f"{side}_elbow"] + 10.0 * env
    look = envelope(n, 0.1, 0.3, start=0.05, end=0.8)
    track["neck_turn"] = sign * 18.0 * look
    track["spine_twist"] = sign * 8.0 * look
    return track
