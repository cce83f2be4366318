"""Caption grammar: several paraphrases, every caption states every attribute of its parameters."""

from __future__ import annotations

import numpy as np
import pytest

from sopo_ray.data.synthetic.captions import SUBJECTS, caption, describe, segment_phrase
from sopo_ray.data.synthetic.space import ACTIONS, sample_params

# Words that state an attribute value; a phrase must contain one of them.
WORDS = {
    ("direction", "forward"): ("forward", "ahead"),
    ("direction", "backward"): ("backward", "reverse", "backs up"),
    ("direction", "left"): ("left",), ("direction", "right"): ("right",),
    ("direction", "in_place"): ("in place", "up and down", "straight up"),
    ("hand", "left"): ("left",), ("hand", "right"): ("right",), ("hand", "both"): ("both", "arms"),
    ("leg", "left"): ("left",), ("leg", "right"): ("right",),
    ("speed", "slow"): ("slow", "leisurely"), ("speed", "fast"): ("quick", "brisk", "fast"),
    ("count", 2): ("twice", "two"), ("count", 3): ("three", "thrice"), ("count", 4): ("four",),
    ("angle", 180): ("180", "eighty", "half", "u-turn", "around"),
}


def _segments():
    for action, spec in ACTIONS.items():
        combos = [{"action": action}]
        for name, values in spec.attributes:
            combos = [dict(c, **{name: v}) for c in combos for v in values]
        yield from combos


@pytest.mark.parametrize("segment", list(_segments()), ids=lambda s: "/".join(str(v) for v in s.values()))
def test_every_phrase_states_every_attribute(segment):
    rng = np.random.default_rng(0)
    phrases = {segment_phrase(segment, rng, gender) for gender in ("neutral", "male", "female") for _ in range(15)}
    assert len(phrases) >= 3  # paraphrases, not one fixed sentence
    for phrase in phrases:
        assert phrase == phrase.strip() and "  " not in phrase and "{" not in phrase
        for name, value in segment.items():
            words = WORDS.get((name, value))
            if words:
                assert any(w in phrase for w in words), (phrase, name, value)
        if segment.get("direction") == "left":
            assert "right" not in phrase
        if segment.get("hand") == "right" or segment.get("leg") == "right":
            assert "left" not in phrase


def test_captions_of_a_motion_are_distinct_paraphrases():
    rng = np.random.default_rng(1)
    for _ in range(50):
        params, _ = sample_params(rng, 40, 196)
        texts = describe(params, rng, 3)
        assert len(texts) == len(set(texts)) == 3
        for text in texts:
            assert any(text.startswith(s) for group in SUBJECTS.values() for s in group)
            if len(params["segments"]) > 1:
                assert any(w in text for w in ("then", "after that", "finally"))


def test_caption_is_a_function_of_the_seed():
    params = {"segments": [{"action": "walk", "direction": "forward", "speed": "slow"},
                           {"action": "turn", "direction": "left", "angle": 90},
                           {"action": "wave", "hand": "right"}], "fractions": [0.4, 0.3, 0.3]}
    assert caption(params, np.random.default_rng(5)) == caption(params, np.random.default_rng(5))
    text = caption(params, np.random.default_rng(5))
    assert text.index("left") < text.rindex("right")  # segments appear in order
