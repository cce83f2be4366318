"""Hard negatives for contrastive text-motion training, made from (text, motion) pairs alone.

In-batch negatives of a random batch differ from the positive in the action ("jumps" vs "waves"), so a model
trained on them ranks actions but not the details that tell the policy's own samples apart: which side, which
way, how many times, how fast. Two sources of negatives that differ in exactly one such detail:

- mirrored pairs (`sopo_ray.motion.mirror`): each batch holds motions next to their left-right mirrors, whose
  captions name the other side (HumanML3D trains on the same augmentation);
- counterfactual captions: the positive caption with one attribute word exchanged ("twice" -> "three times",
  "forward" -> "backward", "slowly" -> "quickly", "90" -> "180"), an extra negative text for its motion.

Both are plain edits of English motion descriptions and would apply to real HumanML3D captions as they are.
"""

from __future__ import annotations

import re

SWAP_GROUPS: tuple[tuple[str, ...], ...] = (
    ("left", "right"),
    ("forward", "backward"),
    ("forwards", "backwards"),
    ("once", "twice", "three times", "four times"),
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
