"""Hard negatives for contrastive text-motion training, made from (text, motion) pairs alone.

In-batch negatives of a random batch differ from the positive in the action ("jumps" vs "waves"), so a model
trained on them ranks actions but not the details that tell the policy's own samples apart: which side, which
way, how many times, how fast. Two sources of negatives that differ in exactly one such detail:

- mirrored pairs (`sopo_ray.motion.mirror`): each batch holds motions next to their left-right mirrors, whose
  captions name the other side (HumanML3D trains on the same augmentation);
- counterfactual captions: the positive caption with one attribute word exchanged ("twice" -> "three times",
  "forward" -> "backward", "slowly" -> "quickly", "90" -> "180"), an extra negative text for its motion.

Both are plain edits of English motion descriptions and would apply to real HumanML3D captions as they are.
Beside them, `corrupt` breaks a motion into an extra negative for its own caption, and `hold_pad` lengthens a
motion by standing still, which keeps its caption true (a positive, so that length stops telling a count).
"""

from __future__ import annotations

import re

import numpy as np

from sopo_ray.motion.features import feature_slices, joints_for_dim

COUNT_WORDS = ("once", "twice", "three times", "four times")
"""How captions say how many times an action repeats (one swap group below, and `diagnostics.count_probe`)."""

SWAP_GROUPS: tuple[tuple[str, ...], ...] = (
    ("left", "right"),
    ("forward", "backward"),
    ("forwards", "backwards"),
    COUNT_WORDS,
    ("two times", "three times"),
    ("thrice", "twice"),
    ("one", "two", "three", "four"),
    ("slowly", "quickly"),
    ("slow", "fast"),
    ("leisurely", "briskly"),
    ("90", "180"),
    ("ninety", "a hundred and eighty"),
    ("quarter", "half"),
    ("clockwise", "counterclockwise"),
)


def counterfactuals(caption: str) -> list[str]:
    """Every caption that differs from `caption` in one attribute phrase (one occurrence exchanged for another
    member of its `SWAP_GROUPS` group), without duplicates or the caption itself."""
    out: dict[str, None] = {}
    for group in SWAP_GROUPS:
        for word in group:
            for match in re.finditer(rf"\b{re.escape(word)}\b", caption, re.IGNORECASE):
                for other in group:
                    if other.lower() == word.lower():
                        continue
                    replacement = other.capitalize() if match.group(0)[0].isupper() else other
                    edited = caption[:match.start()] + replacement + caption[match.end():]
                    if edited.lower() != caption.lower():
                        out[edited] = None
    return list(out)


SEQUENCE_CONNECTIVES = re.compile(r"(, and finally |,? and then |, then |, after that (?:he |she |they )?| then )")
"""How captions chain actions in time ("walks forward, then jumps", "..., after that she sits down")."""
SUBJECT = re.compile(r"^((?:a|an|the)\s+\w+|someone|somebody|he|she|they)\s+(first\s+)?", re.IGNORECASE)
"""A caption's leading subject ("a person", "the woman", "someone"), with the "first" of "first X, then Y"."""


def reorderings(caption: str) -> list[str]:
    """The caption with two neighbouring actions in the other order ("a person waves, then jumps." -> "a person
    jumps, then waves."): a negative that differs from the positive only in order, which the pooled sentence
    embedding hardly tells apart (cosine 0.99). Empty for a caption of one action or without a known subject."""
    subject = SUBJECT.match(caption)
    if subject is None:
        return []
    body = caption[subject.end():]
    end = len(body.rstrip(" ."))
    parts = SEQUENCE_CONNECTIVES.split(body[:end])
    actions, links = parts[0::2], parts[1::2]
    out = []
    for i in range(len(actions) - 1):
        swapped = actions[:i] + [actions[i + 1], actions[i]] + actions[i + 2:]
        text = swapped[0] + "".join(link + act for link, act in zip(links, swapped[1:], strict=True))
        out.append(caption[:subject.end()] + text + body[end:])
    return [c for c in dict.fromkeys(out) if c != caption]


CORRUPTIONS = ("drift", "freeze", "reverse")
"""How `corrupt` breaks a motion so that it no longer does what its caption says, keeping it motion-like."""


def corrupt(features: np.ndarray, length: int, kind: str, rng: np.random.Generator) -> np.ndarray:
    """A copy of one motion's un-normalised features `[T, 263]` broken in one way (the first `length` frames):

    drift    the whole body also travels at 0.5-1.5 m/s in a random direction of the facing frame (a motion in
             place now moves; a walk goes elsewhere or at another speed)
    freeze   30-60% of the clip, at a random time, holds the pose of its first frame (an action left out or
             cut short: fewer repetitions, a sequence missing a part)
    reverse  played backwards (forward becomes backward, sitting down becomes standing up, orders swap)

    Velocities stay consistent with the poses; real data never looks like this, so the reward learns that what a
    caption says also rules these out, which contrastive pairs of real motions alone never teach.
    """
    x = np.array(features, dtype=np.float32, copy=True)
    n = int(length)
    if kind == "drift":
        angle = rng.uniform(0, 2 * np.pi)
        step = rng.uniform(0.5, 1.5) / 20.0 * np.array([np.sin(angle), np.cos(angle)], dtype=np.float32)
        x[:n, 1:3] += step                                   # root velocity, facing frame (x sideways, z forward)
        local = x[:n, 193:259].reshape(n, 22, 3)
        local[:, :, [0, 2]] += step                          # every joint moves with the root
        x[:n, 193:259] = local.reshape(n, -1)
    elif kind == "freeze":
        size = max(1, int(n * rng.uniform(0.3, 0.6)))
        start = int(rng.integers(0, max(1, n - size)))
        x[start:start + size] = x[start]
        _stand_still(x, slice(start, start + size))
    elif kind == "reverse":
        x[:n] = x[:n][::-1]
        x[:n, 0:3] *= -1.0
        x[:n, 193:259] *= -1.0
    else:
        raise ValueError(f"unknown corruption {kind!r}; use one of {', '.join(CORRUPTIONS)}")
    return x


def hold_pad(features: np.ndarray, length: int, new_length: int, before: int) -> np.ndarray:
    """A copy of one motion `[T, D]` (HumanML3D or KIT features) lengthened to `new_length` frames by standing
    still: `before` frames holding its first pose, then the motion, then its last pose held (velocities zero, feet
    in contact)."""
    n, after = int(length), int(new_length) - int(length) - int(before)
    if before < 0 or after < 0 or new_length > len(features):
        raise ValueError(f"cannot pad a {n}-frame motion to {new_length} frames ({before} before) in {len(features)}")
    contacts = feature_slices(joints_for_dim(features.shape[-1]))["foot_contact"]
    x = np.zeros_like(features)
    x[before:before + n] = features[:n]
    x[:before] = features[0]
    x[before + n:new_length] = features[n - 1]
    for held in (slice(0, before), slice(before + n, new_length)):
        _stand_still(x, held)
        x[held, contacts] = 1.0
    return x


def _stand_still(x: np.ndarray, frames: slice) -> None:
    """Zero the root and joint velocities of `frames` of `x [T, D]` in place: held poses do not move."""
    blocks = feature_slices(joints_for_dim(x.shape[-1]))
    for velocity in ("root_rot_vel", "root_lin_vel", "local_vel"):
        x[frames, blocks[velocity]] = 0.0
