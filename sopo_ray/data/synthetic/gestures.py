"""Upper-body actions as joint-angle curves: wave, raise arms, clap, punch, throw.

Each starts and ends in the neutral standing pose; counted actions repeat a smooth pulse `count` times with the
hands coming back down (or apart) in between, which is what the oracle counts.
"""

from __future__ import annotations

import numpy as np

from sopo_ray.data.synthetic.curves import envelope, pulses, ramp, smoothstep, unit_time
from sopo_ray.data.synthetic.pose import FPS, NEUTRAL, Style, Track


def arm_sides(hand: str) -> tuple[str, ...]:
    """Pose-channel prefixes of the arms a `hand` attribute names ("left", "right", "both")."""
    return {"left": ("l",), "right": ("r",), "both": ("l", "r")}[hand]


def apply_keys(track: Track, keys: list[tuple[float, dict[str, float]]]) -> None:
    """Ease every channel named in `keys` through its key values at the given clip fractions (smoothstep
    between consecutive keys; before the first and after the last key the value is held). A channel missing
    from a key is at its neutral value there."""
    names = sorted({name for _, values in keys for name in values})
    t = unit_time(track.n)
    for name in names:
        values = [v.get(name, NEUTRAL.get(name, 0.0)) for _, v in keys]
        curve = np.full(track.n, values[0])
        for (t0, _), (t1, _), v0, v1 in zip(keys[:-1], keys[1:], values[:-1], values[1:], strict=True):
            curve += (v1 - v0) * smoothstep((t - t0) / max(t1 - t0, 1e-6))
        track[name] = curve


def _oscillation(n: int, hz: float, rng: np.random.Generator) -> np.ndarray:
    return np.sin(2 * np.pi * hz * np.arange(n) / FPS + rng.uniform(0, 2 * np.pi))


def wave_track(segment: dict, n: int, rng: np.random.Generator, style: Style) -> Track:
    """Wave: the hand goes up beside the head, the forearm swings side to side, then the arm comes down."""
    track = Track(n)
    side = arm_sides(segment["hand"])[0]
    up = envelope(n, 0.18, 0.18, start=0.02, end=0.98)
    swinging = envelope(n, 0.1, 0.1, start=0.15, end=0.85)
    abd = rng.uniform(100.0, 125.0) * style.amplitude
    track[f"{side}_sh_abd"] = NEUTRAL[f"{side}_sh_abd"] + up * (abd - NEUTRAL[f"{side}_sh_abd"])
    track[f"{side}_sh_flex"] = NEUTRAL[f"{side}_sh_flex"] + up * rng.uniform(5.0, 25.0)
    track[f"{side}_sh_twist"] = up * 85.0
    swing = swinging * rng.uniform(18.0, 28.0) * _oscillation(n, rng.uniform(1.6, 2.3) * style.tempo, rng)
    track[f"{side}_elbow"] = NEUTRAL[f"{side}_elbow"] + up * (rng.uniform(50.0, 65.0) - NEUTRAL["l_elbow"]) + swing
    track["neck_turn"] = up * rng.uniform(-8.0, 8.0)
    return track


def raise_track(segment: dict, n: int, rng: np.random.Generator, style: Style) -> Track:
    """Raise one or both arms straight above the head `count` times, lowering them in between."""
    track = Track(n)
    up = pulses(n, segment["count"], start=0.04, end=0.96, hold=rng.uniform(0.25, 0.45), gap=0.15)
    sideways = rng.uniform(0.0, 1.0) < 0.35
    height = rng.uniform(160.0, 175.0)
    for side in arm_sides(segment["hand"]):
        if sideways:
            track[f"{side}_sh_abd"] = NEUTRAL[f"{side}_sh_abd"] + up * (height - NEUTRAL[f"{side}_sh_abd"])
            track[f"{side}_sh_twist"] = up * 80.0
        else:
            track[f"{side}_sh_flex"] = NEUTRAL[f"{side}_sh_flex"] + up * (height - NEUTRAL[f"{side}_sh_flex"])
            track[f"{side}_sh_abd"] = NEUTRAL[f"{side}_sh_abd"] + up * rng.uniform(0.0, 12.0)
        track[f"{side}_elbow"] = NEUTRAL[f"{side}_elbow"] * (1.0 - up) + up * rng.uniform(3.0, 12.0)
        track[f"{side}_clav"] = up * 12.0
    track["neck_bend"] = NEUTRAL["neck_bend"] - up * rng.uniform(0.0, 15.0)
    return track


def clap_track(segment: dict, n: int, rng: np.random.Generator, style: Style) -> Track:
    """Clap `count` times: hands come up in front of the chest, meet and part again, then go down."""
    track = Track(n)
    up = envelope(n, 0.2, 0.2, start=0.02, end=0.98)
    together = pulses(n, segment["count"], start=0.2, end=0.8, hold=0.1, gap=0.3)
    flex, elbow = rng.uniform(45.0, 60.0), rng.uniform(60.0, 70.0)
    # Turning the upper arms inwards swings the bent forearms together.
    for side in ("l", "r"):
        track[f"{side}_sh_flex"] = NEUTRAL[f"{side}_sh_flex"] + up * (flex - NEUTRAL[f"{side}_sh_flex"])
        track[f"{side}_sh_abd"] = NEUTRAL[f"{side}_sh_abd"] + up * (15.0 - NEUTRAL[f"{side}_sh_abd"])
        track[f"{side}_sh_twist"] = up * 10.0 - together * 72.0
        track[f"{side}_elbow"] = NEUTRAL[f"{side}_elbow"] + up * (elbow - NEUTRAL[f"{side}_elbow"])
    return track


def punch_track(segment: dict, n: int, rng: np.random.Generator, style: Style) -> Track:
    """Punch `count` times with one fist from a boxing guard, the torso turning into each punch."""
    track = Track(n)
    side = arm_sides(segment["hand"])[0]
    mirror = 1.0 if side == "l" else -1.0
    guard = envelope(n, 0.15, 0.15, start=0.02, end=0.98)
    hit = pulses(n, segment["count"], start=0.18, end=0.86, hold=0.15, gap=0.3)
    for s in ("l", "r"):
        track[f"{s}_sh_flex"] = NEUTRAL[f"{s}_sh_flex"] + guard * 30.0
        track[f"{s}_sh_abd"] = NEUTRAL[f"{s}_sh_abd"] + guard * 12.0
        track[f"{s}_sh_twist"] = -guard * 12.0
        track[f"{s}_elbow"] = NEUTRAL[f"{s}_elbow"] + guard * 110.0
    track[f"{side}_sh_flex"] = track[f"{side}_sh_flex"] + hit * (rng.uniform(80.0, 90.0) - 34.0)
    track[f"{side}_sh_abd"] = track[f"{side}_sh_abd"] - hit * 20.0
    track[f"{side}_sh_twist"] = track[f"{side}_sh_twist"] + hit * 12.0
    track[f"{side}_elbow"] = track[f"{side}_elbow"] - hit * (track[f"{side}_elbow"] - rng.uniform(0.0, 8.0))
    track["spine_twist"] = -mirror * 18.0 * hit
    # A boxer's stance: the leg on the other side a little forward, knees soft.
    front = "r" if side == "l" else "l"
    track[f"{front}_hip_flex"] = NEUTRAL[f"{front}_hip_flex"] + guard * 8.0
    for s in ("l", "r"):
        track[f"{s}_knee"] = NEUTRAL[f"{s}_knee"] + guard * 10.0
    return track


def throw_track(segment: dict, n: int, rng: np.random.Generator, style: Style) -> Track:
    """Overhand throw: wind up with the hand behind the head, whip the arm forward, follow through."""
    track = Track(n)
    side = arm_sides(segment["hand"])[0]
    mirror = 1.0 if side == "l" else -1.0
    t_up, t_go = rng.uniform(0.35, 0.45), rng.uniform(0.52, 0.6)
    windup = {f"{side}_sh_flex": 140.0, f"{side}_sh_abd": 55.0, f"{side}_sh_twist": 80.0, f"{side}_elbow": 100.0,
              "spine_twist": mirror * 20.0, "spine_bend": -8.0, f"{side}_clav": 10.0}
    release = {f"{side}_sh_flex": rng.uniform(60.0, 80.0), f"{side}_sh_abd": 10.0, f"{side}_elbow": 10.0,
               "spine_twist": -mirror * 20.0, "spine_bend": 18.0}
    keys = [(0.0, {}), (0.08, {}), (t_up, windup), (t_up + 0.06, windup), (t_go, release), (t_go + 0.08, release),
            (0.95, {})]
    apply_keys(track, keys)
    # The body leans into the release.
    track["pelvis_pitch"] = 6.0 * ramp(n, t_up, t_go) * (1.0 - ramp(n, t_go + 0.08, 0.95))
    return track
