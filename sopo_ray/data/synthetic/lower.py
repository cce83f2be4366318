"""Lower-body actions as joint-angle curves: squat, jump, kick, kneel, sit down.

Poses are eased through key poses (`gestures.apply_keys`); feet that stand keep flat on the floor because
every key sets the ankle to undo the thigh and shin tilt (ankle = hip flexion - knee flexion + pelvis pitch),
and easing all channels with the same weights keeps that relation between keys. Kneel and sit end in a held
pose, so they only come last in a sequence.
"""

from __future__ import annotations

import numpy as np

from sopo_ray.data.synthetic.curves import pulses, ramp, unit_time
from sopo_ray.data.synthetic.gestures import apply_keys
from sopo_ray.data.synthetic.pose import NEUTRAL, Style, Track, flat_foot, leg_ik, pose_joints


def _repeat(keys: list[tuple[float, dict[str, float]]], count: int, start: float, end: float) -> list:
    """The key poses of one repetition (times in [0, 1]) laid out `count` times over [start, end]."""
    width = (end - start) / count
    out: list[tuple[float, dict[str, float]]] = [(0.0, {})]
    for k in range(count):
        out.extend((start + (k + tau) * width, pose) for tau, pose in keys)
    out.append((1.0, {}))
    return out


def _legs(hip: float, knee: float, pitch: float = 0.0, sides: str = "lr") -> dict[str, float]:
    """Both legs (or `sides`) bent by `hip` / `knee` with the feet flat on the floor."""
    pose: dict[str, float] = {}
    for s in sides:
        pose.update({f"{s}_hip_flex": hip, f"{s}_knee": knee, f"{s}_ankle": hip - knee + pitch})
    return pose


def squat_track(segment: dict, n: int, rng: np.random.Generator, style: Style) -> Track:
    """Squat `count` times: hips back and down until the thighs are about level, arms forward for balance."""
    track = Track(n)
    down = pulses(n, segment["count"], start=0.05, end=0.95, hold=rng.uniform(0.05, 0.25), gap=0.1)
    depth = rng.uniform(0.92, 1.05) * style.amplitude
    arms = rng.uniform(20.0, 85.0)
    track["pelvis_pitch"] = 18.0 * depth * down
    track["spine_bend"] = NEUTRAL["spine_bend"] + 22.0 * depth * down
    for s in ("l", "r"):
        track[f"{s}_hip_flex"] = NEUTRAL[f"{s}_hip_flex"] + 88.0 * depth * down
        track[f"{s}_knee"] = NEUTRAL[f"{s}_knee"] + 118.0 * depth * down
        track[f"{s}_ankle"] = flat_foot(track, s)
        track[f"{s}_sh_flex"] = NEUTRAL[f"{s}_sh_flex"] + arms * down
    return track


def jump_track(segment: dict, n: int, rng: np.random.Generator, style: Style) -> Track:
    """Jump `count` times, in place or forward: crouch, swing the arms up and push off, fly, land softly."""
    track = Track(n)
    crouch = {**_legs(55.0, 85.0, 10.0), "pelvis_pitch": 10.0, "spine_bend": 25.0, "l_sh_flex": -35.0,
              "r_sh_flex": -35.0}
    push = {**_legs(0.0, 2.0), "l_ankle": 35.0, "r_ankle": 35.0, "l_sh_flex": 120.0, "r_sh_flex": 120.0}
    apex = {**_legs(12.0, 20.0), "l_ankle": 20.0, "r_ankle": 20.0, "l_sh_flex": 90.0, "r_sh_flex": 90.0}
    land = {**_legs(40.0, 60.0, 6.0), "pelvis_pitch": 6.0, "spine_bend": 15.0, "l_sh_flex": 40.0,
            "r_sh_flex": 40.0}
    rep = [(0.0, {}), (0.22, crouch), (0.36, push), (0.5, apex), (0.64, push), (0.74, land), (0.92, {})]
    start, end = 0.03, 0.97
    apply_keys(track, _repeat(rep, segment["count"], start, end))
    t = unit_time(n)
    width = (end - start) / segment["count"]
    local = ((t - start) / width) % 1.0
    rep_index = np.floor((t - start) / width)
    flying = (local > 0.36) & (local < 0.64) & (rep_index >= 0) & (rep_index < segment["count"])
    height = rng.uniform(0.22, 0.38) * style.amplitude
    track.lift = np.where(flying, height * np.sin(np.pi * (local - 0.36) / 0.28), 0.0)
    track.plant = np.where(flying, 0.0, 1.0)
    if segment["direction"] == "forward":
        flight_frames = max(0.28 * width * (n - 1), 1.0)
        speed = rng.uniform(0.55, 0.9) / flight_frames
        track.drift = np.stack([np.zeros(n), np.where(flying, speed, 0.0)], -1)
    return track


def kick_track(segment: dict, n: int, rng: np.random.Generator, style: Style) -> Track:
    """Front kick `count` times: lift the knee, snap the lower leg out, pull it back, put the foot down."""
    track = Track(n)
    kick, support = ("l", "r") if segment["leg"] == "left" else ("r", "l")
    height = rng.uniform(75.0, 95.0) * style.amplitude
    base = {f"{support}_knee": 12.0, f"{support}_ankle": NEUTRAL[f"{support}_hip_flex"] - 12.0,
            "l_sh_abd": 30.0, "r_sh_abd": 30.0, "l_elbow": 40.0, "r_elbow": 40.0}
    chamber = {**base, f"{kick}_hip_flex": 65.0, f"{kick}_knee": 100.0, f"{kick}_ankle": 10.0, "spine_bend": -3.0}
    extend = {**base, f"{kick}_hip_flex": height, f"{kick}_knee": 5.0, f"{kick}_ankle": 25.0, "spine_bend": -12.0}
    rep = [(0.0, {}), (0.15, base), (0.32, chamber), (0.48, extend), (0.56, extend), (0.7, chamber), (0.86, base),
           (1.0, {})]
    apply_keys(track, _repeat(rep, segment["count"], 0.03, 0.97))
    track.stance = np.full(n, 0 if support == "l" else 1)
    return track


def _kneeling_pose(front: str, rear: str) -> Track:
    """The final kneeling pose (one frame): rear knee and toes on the floor below and behind the hip, front
    foot flat on the floor ahead (placed by leg IK)."""
    pose = Track(1)
    pose.angles.update({f"{rear}_hip_flex": np.array([-5.0]), f"{rear}_knee": np.array([105.0]),
                        f"{rear}_ankle": np.array([-40.0])})
    drop = 0.063 + 0.392 * np.cos(np.radians(5.0)) + 0.01
    leg_ik(pose, front, np.array([[(1.0 if front == "l" else -1.0) * 0.1, 0.05 - drop, 0.45]]))
    pose[f"{front}_ankle"] = flat_foot(pose, front)
    return pose


def kneel_track(segment: dict, n: int, rng: np.random.Generator, style: Style) -> Track:
    """Kneel on one knee: step one foot well forward, lower the other knee to the floor, and stay there.

    Both feet are placed by leg IK on world-fixed targets while the hips travel forward and down, so the rear
    foot stays planted while its knee goes down."""
    track = Track(n)
    front, rear = ("l", "r") if rng.uniform() < 0.5 else ("r", "l")
    stand = pose_joints(Track(1))[0]
    final = pose_joints(_kneeling_pose(front, rear))[0]
    ankle = {"l": 7, "r": 8}
    toe = {"l": 10, "r": 11}
    # Final root placement: the rear toes stay where they stood.
    root_end = np.array([0.0, final[0, 1], stand[toe[rear], 2] - (final[toe[rear], 2] - final[0, 2])])
    t0, t1, t2 = 0.05, rng.uniform(0.3, 0.4), rng.uniform(0.7, 0.8)
    go = ramp(n, t0, (t1 + t2) / 2)[:, None]
    down = ramp(n, t1, t2)[:, None]
    root = np.stack([np.zeros(n), stand[0, 1] + (root_end[1] - stand[0, 1]) * down[:, 0], root_end[2] * go[:, 0]], -1)
    targets = {}
    for side, start_weight in ((front, ramp(n, t0, t1)[:, None]), (rear, down)):
        start = stand[ankle[side]]
        end = root_end + final[ankle[side]] - final[0]
        world = start + (end - start) * start_weight
        if side == front:
            world[:, 1] += 0.12 * np.sin(np.pi * start_weight[:, 0])
        targets[side] = world - root
    for side, target in targets.items():
        leg_ik(track, side, target)
    track[f"{front}_ankle"] = flat_foot(track, front)
    track[f"{rear}_ankle"] = flat_foot(track, rear) * (1.0 - down[:, 0]) - 40.0 * down[:, 0]
    settle = ramp(n, t1, t2)
    track["spine_bend"] = NEUTRAL["spine_bend"] + 10.0 * np.sin(np.pi * settle)
    track[f"{front}_sh_flex"] = NEUTRAL[f"{front}_sh_flex"] + 31.0 * settle
    track[f"{front}_elbow"] = NEUTRAL[f"{front}_elbow"] + 30.0 * settle
    track[f"{rear}_sh_flex"] = NEUTRAL[f"{rear}_sh_flex"] + 6.0 * settle
    return track


def sit_track(segment: dict, n: int, rng: np.random.Generator, style: Style) -> Track:
    """Sit down on a chair: lean forward, lower the hips back and down, sit upright with hands on the thighs."""
    track = Track(n)
    lean = {**_legs(55.0, 65.0, 10.0), "pelvis_pitch": 10.0, "spine_bend": 35.0, "l_sh_flex": 45.0,
            "r_sh_flex": 45.0, "l_elbow": 30.0, "r_elbow": 30.0}
    seated = {**_legs(95.0, 92.0, -8.0), "pelvis_pitch": -8.0, "spine_bend": rng.uniform(-2.0, 8.0),
              "l_sh_flex": 35.0, "r_sh_flex": 35.0, "l_elbow": 55.0, "r_elbow": 55.0}
    t0 = rng.uniform(0.05, 0.2)
    t1 = t0 + rng.uniform(0.55, 0.7) * (1.0 - t0)
    apply_keys(track, [(0.0, {}), (t0, {}), ((t0 + t1) / 2, lean), (t1, seated), (1.0, seated)])
    return track
