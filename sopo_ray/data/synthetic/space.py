"""The parameter space of the synthetic dataset: actions, their attributes, clip timing, and held-out combinations.

A motion's structured parameters are a JSON-able dict:

    {"segments": [{"action": "walk", "direction": "forward", "speed": "normal"},
                  {"action": "wave", "hand": "right"}],
     "fractions": [0.58, 0.42]}        # share of the clip each segment takes, in order

Captions (captions.py), motions (build.py with locomotion.py, gestures.py, lower.py) and the oracle (oracle.py)
are all functions of these parameters. A segment's *combination* (`combo_key`, e.g. "wave/left" or
"raise/both/x2") names its action with all attribute values; the split holds some combinations and some action
orders out of training entirely.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sopo_ray.data.synthetic.pose import FPS


@dataclass(frozen=True)
class ActionSpec:
    """One action: its attributes and choices, sampling weight, and how long it naturally takes."""

    name: str
    attributes: tuple[tuple[str, tuple], ...]
    weight: float
    seconds: tuple[float, float]
    """Natural duration range without repetitions (or of the fixed part, for counted actions)."""
    per_count: tuple[float, float] = (0.0, 0.0)
    """Extra seconds per repetition (range), for actions with a `count`."""
    min_seconds: float = 1.2
    """Shortest duration (fixed part) the action may be squeezed to."""
    min_per_count: float = 0.0
    """Shortest duration per repetition."""
    final: bool = False
    """Ends in a held pose (kneeling, seated): only allowed as the last segment."""


LOCOMOTION = ("walk", "jog", "run", "sidestep")
ACTIONS: dict[str, ActionSpec] = {spec.name: spec for spec in (
    ActionSpec("walk", (("direction", ("forward", "backward", "left", "right")),
                        ("speed", ("slow", "normal", "fast"))), 3.0, (2.6, 4.0), min_seconds=1.8),
    ActionSpec("jog", (("direction", ("forward", "left", "right")),), 1.0, (2.0, 3.0), min_seconds=1.6),
    ActionSpec("run", (("direction", ("forward", "left", "right")),), 1.0, (2.0, 3.0), min_seconds=1.6),
    ActionSpec("sidestep", (("direction", ("left", "right")),), 1.0, (2.4, 3.4), min_seconds=1.9),
    ActionSpec("turn", (("direction", ("left", "right")), ("angle", (90, 180))), 1.2, (1.6, 2.4),
               min_seconds=1.3),
    ActionSpec("wave", (("hand", ("left", "right")),), 1.0, (2.2, 3.2), min_seconds=1.7),
    ActionSpec("raise", (("hand", ("left", "right", "both")), ("count", (1, 2, 3))), 1.2, (0.5, 0.8),
               (1.0, 1.4), min_seconds=0.3, min_per_count=0.85),
    ActionSpec("clap", (("count", (1, 2, 3, 4)),), 1.0, (0.9, 1.3), (0.45, 0.6), min_seconds=0.7,
               min_per_count=0.45),
    ActionSpec("punch", (("hand", ("left", "right")), ("count", (1, 2, 3))), 1.0, (0.8, 1.1), (0.5, 0.7),
               min_seconds=0.6, min_per_count=0.5),
    ActionSpec("throw", (("hand", ("left", "right")),), 0.8, (1.8, 2.4), min_seconds=1.5),
    ActionSpec("squat", (("count", (1, 2, 3)),), 1.0, (0.4, 0.7), (1.2, 1.6), min_seconds=0.3,
               min_per_count=1.0),
    ActionSpec("jump", (("direction", ("in_place", "forward")), ("count", (1, 2, 3))), 1.0, (0.5, 0.8),
               (0.9, 1.1), min_seconds=0.3, min_per_count=0.8),
    ActionSpec("kick", (("leg", ("left", "right")), ("count", (1, 2))), 1.0, (0.5, 0.8), (1.1, 1.4),
               min_seconds=0.4, min_per_count=0.95),
    ActionSpec("kneel", (), 0.7, (2.2, 3.0), min_seconds=1.8, final=True),
    ActionSpec("sit", (), 0.7, (2.2, 3.0), min_seconds=1.8, final=True),
)}

# Combinations that appear only in the test split: every attribute value and every action still appears in
# training, only these pairings do not (compositional generalisation).
HELD_OUT_COMBOS: tuple[str, ...] = (
    "jog/left", "raise/both/x2", "kick/left/x2", "turn/right/180", "punch/left/x2", "walk/right/slow",
)
# Consecutive action pairs (first, then second) that appear only in the test split.
HELD_OUT_ORDERS: tuple[tuple[str, str], ...] = (("squat", "jump"), ("turn", "clap"), ("walk", "kneel"))

SEGMENT_COUNT_WEIGHTS = (0.55, 0.32, 0.13)
"""Probability of a motion having 1, 2 or 3 segments (sequences of actions)."""


def combo_key(segment: dict) -> str:
    """Name of a segment's combination, e.g. "walk/forward/normal", "raise/both/x2", "kneel"."""
    spec = ACTIONS[segment["action"]]
    parts = [spec.name]
    for name, _ in spec.attributes:
        value = segment[name]
        parts.append(f"x{value}" if name == "count" else str(value))
    return "/".join(parts)


def is_held_out(params: dict) -> bool:
    """True if the motion uses a held-out combination or a held-out consecutive action order."""
    segments = params["segments"]
    if any(combo_key(s) in HELD_OUT_COMBOS for s in segments):
        return True
    actions = [s["action"] for s in segments]
    return any(pair in HELD_OUT_ORDERS for pair in zip(actions[:-1], actions[1:], strict=False))


def _sample_segment(rng: np.random.Generator, allowed: list[str]) -> dict:
    weights = np.array([ACTIONS[a].weight for a in allowed])
    action = allowed[int(rng.choice(len(allowed), p=weights / weights.sum()))]
    segment: dict = {"action": action}
    for name, choices in ACTIONS[action].attributes:
        value = choices[int(rng.integers(len(choices)))]
        segment[name] = value.item() if isinstance(value, np.generic) else value
    return segment


def _durations(rng: np.random.Generator, segments: list[dict]) -> tuple[np.ndarray, np.ndarray]:
    """(natural seconds, minimum seconds) of each segment."""
    natural, minimum = [], []
    for seg in segments:
        spec = ACTIONS[seg["action"]]
        count = seg.get("count", 0)
        seconds = rng.uniform(*spec.seconds) + count * rng.uniform(*spec.per_count)
        if seg["action"] == "turn" and seg["angle"] == 180:
            seconds += 0.6
        natural.append(seconds)
        minimum.append(spec.min_seconds + count * spec.min_per_count)
    return np.array(natural), np.array(minimum)


def sample_params(rng: np.random.Generator, min_frames: int, max_frames: int) -> tuple[dict, int]:
    """Draw one motion's parameters and its length in (feature) frames, min_frames <= length <= max_frames.

    Sequences whose actions cannot be squeezed into `max_frames` are redrawn; with a very short `max_frames`
    the motion falls back to a single action.
    """
    names = list(ACTIONS)
    for attempt in range(60):
        count = 1 + int(rng.choice(3, p=SEGMENT_COUNT_WEIGHTS)) if attempt < 40 else 1
        segments: list[dict] = []
        for k in range(count):
            last = k == count - 1
            allowed = [a for a in names if (last or not ACTIONS[a].final)
                       and not (segments and segments[-1]["action"] == a)]
            segments.append(_sample_segment(rng, allowed))
        natural, minimum = _durations(rng, segments)
        frames = int(np.clip(round(natural.sum() * FPS), min_frames, max_frames))
        scaled = natural * frames / (natural.sum() * FPS)
        if (scaled >= minimum).all() or attempt == 59:
            fractions = [round(float(f), 4) for f in scaled / scaled.sum()]
            return {"segments": segments, "fractions": fractions}, frames
    raise AssertionError("unreachable: the last attempt always returns")


def segment_frames(fractions: list[float], total: int) -> list[int]:
    """Split `total` frames into consecutive segments by their fractions (each at least 1 frame)."""
    edges = np.round(np.cumsum([0.0, *fractions]) / sum(fractions) * total).astype(int)
    sizes = np.maximum(np.diff(edges), 1)
    sizes[-1] = max(total - int(sizes[:-1].sum()), 1)
    return [int(s) for s in sizes]
