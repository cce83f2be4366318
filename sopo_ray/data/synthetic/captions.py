"""Captions from structured parameters: a small grammar with several paraphrases for every part.

A caption is  subject + segment phrase (+ connective + segment phrase ...), e.g.
"a man walks forward slowly, then turns to the left and waves with his right hand." Every paraphrase of a
segment states all of its attributes (direction, hand, leg, count, speed, angle), so each caption describes the
whole parameter set and the oracle can check any of them. See docs/data.md for the full grammar.
"""

from __future__ import annotations

import numpy as np

SUBJECTS: dict[str, tuple[str, ...]] = {
    "neutral": ("a person", "someone", "the person", "a human", "a figure", "a character"),
    "male": ("a man", "the man", "a guy"),
    "female": ("a woman", "the woman", "a lady"),
}
POSSESSIVE = {"neutral": "their", "male": "his", "female": "her"}
PRONOUN = {"male": "he", "female": "she"}

COUNT_ADVERBS = {1: ("once",), 2: ("twice", "two times"), 3: ("three times", "thrice"), 4: ("four times",)}
COUNT_WORDS = {1: "one", 2: "two", 3: "three", 4: "four"}
SPEED_ADVERBS = {"slow": ("slowly", "at a slow pace", "leisurely"), "normal": ("",),
                 "fast": ("quickly", "briskly", "at a fast pace", "fast")}
TURN_DEGREES = {90: ("90 degrees", "ninety degrees"), 180: ("180 degrees", "a hundred and eighty degrees")}
TURN_NOUNS = {90: ("a quarter turn", "a 90 degree turn"), 180: ("a half turn", "a u-turn")}

# Phrase templates per action. Fields: {dir} left/right, {hand} left/right, {poss} his/her/their,
# {arms} (raise), {count} an adverb like "twice", {n} a number word, {s} a plural "s" for n > 1.
PHRASES: dict[str, tuple[str, ...]] = {
    "walk_forward": ("walks forward", "walks straight ahead", "moves forward", "walks ahead",
                     "walks forward in a straight line", "takes several steps forward"),
    "walk_backward": ("walks backwards", "walks backward", "steps backwards", "moves backwards",
                      "walks in reverse", "backs up"),
    "walk_curve": ("walks in a curve to the {dir}", "walks forward and curves to the {dir}",
                   "walks while veering {dir}", "walks along a path that bends to the {dir}",
                   "walks forward, gradually turning {dir}"),
    "jog_forward": ("jogs forward", "jogs straight ahead", "jogs ahead", "jogs forward at a steady pace"),
    "jog_curve": ("jogs in a curve to the {dir}", "jogs forward and veers to the {dir}",
                  "jogs while curving {dir}"),
    "run_forward": ("runs forward", "runs straight ahead", "sprints forward", "dashes forward", "runs ahead fast"),
    "run_curve": ("runs in a curve to the {dir}", "runs forward and veers {dir}", "runs while curving to the {dir}"),
    "sidestep": ("sidesteps to the {dir}", "steps sideways to the {dir}", "shuffles sideways to the {dir}",
                 "moves sideways to the {dir}", "side-steps {dir}"),
    "turn_degrees": ("turns {degrees} to the {dir}", "turns {dir} by {degrees}", "rotates {degrees} to the {dir}"),
    "turn_noun": ("makes {noun} to the {dir}", "does {noun} to the {dir}", "makes {noun} towards the {dir}"),
    "turn_90": ("turns {dir}", "turns to the {dir}", "turns to face the {dir}", "pivots to the {dir}"),
    "turn_180": ("turns around to the {dir}", "turns all the way around to the {dir}",
                 "turns back around over the {dir} shoulder"),
    "wave": ("waves with {poss} {hand} hand", "waves the {hand} hand", "raises {poss} {hand} hand and waves",
             "waves hello with the {hand} hand", "waves {poss} {hand} arm above {poss} head",
             "gives a wave with {poss} {hand} hand"),
    "raise": ("raises {arms} above {poss} head {count}", "lifts {arms} overhead {count}",
              "puts {arms} up in the air {count}", "reaches up with {arms} {count}",
              "raises and lowers {arms} {count}"),
    "clap": ("claps {count}", "claps {poss} hands {count}", "claps {poss} hands together {count}",
             "claps {count} in front of {poss} chest"),
    "punch": ("punches forward with {poss} {hand} fist {count}", "punches with the {hand} hand {count}",
              "throws {n} {hand} punch{es}", "jabs forward with {poss} {hand} arm {count}",
              "boxes with the {hand} hand, punching {count}"),
    "throw": ("throws something with {poss} {hand} hand", "throws a ball with the {hand} hand",
              "makes an overhand throw with {poss} {hand} arm", "winds up and throws with the {hand} hand",
              "pitches a ball with {poss} {hand} arm"),
    "squat": ("squats down {count}", "does {n} squat{s}", "squats {count}", "bends {poss} knees and squats {count}",
              "crouches down and stands back up {count}"),
    "jump_in_place": ("jumps in place {count}", "jumps up and down {count}", "hops in place {count}",
                      "jumps straight up {count}", "does {n} jump{s} in place"),
    "jump_forward": ("jumps forward {count}", "leaps forward {count}", "hops forward {count}",
                     "does {n} jump{s} forward", "jumps ahead {count}"),
    "kick": ("kicks with {poss} {leg} leg {count}", "kicks forward with the {leg} foot {count}",
             "kicks {poss} {leg} leg out in front {count}", "does {n} front kick{s} with the {leg} leg",
             "performs a {leg} kick {count}"),
    "kneel": ("kneels down", "kneels on one knee", "gets down on one knee", "goes down to kneel",
              "drops to one knee"),
    "sit": ("sits down", "sits down on a chair", "takes a seat", "sits down as if on a chair",
            "lowers into a seated position"),
}

CONNECTIVES = (", then ", " and then ", ", and then ", ", after that ")


def _pick(rng: np.random.Generator, options: tuple[str, ...]) -> str:
    return options[int(rng.integers(len(options)))]


def _phrase_key(seg: dict, rng: np.random.Generator) -> str:
    action = seg["action"]
    if action in ("walk", "jog", "run"):
        direction = seg["direction"]
        if direction in ("left", "right"):
            return f"{action}_curve"
        return f"{action}_{direction}"
    if action == "jump":
        return f"jump_{seg['direction']}"
    if action == "turn":
        return ("turn_degrees", "turn_noun", f"turn_{seg['angle']}")[int(rng.integers(3))]
    return action


def segment_phrase(seg: dict, rng: np.random.Generator, gender: str) -> str:
    """One verb phrase (third person, present tense) describing a segment with all its attributes."""
    key = _phrase_key(seg, rng)
    template = _pick(rng, PHRASES[key])
    count = seg.get("count", 1)
    count_adverb = _pick(rng, COUNT_ADVERBS[count])
    if count == 1 and rng.uniform() < 0.5:
        count_adverb = ""
    poss = POSSESSIVE[gender] if rng.uniform() < 0.7 else "the"
    hand = seg.get("hand", "")
    arms = {"both": _pick(rng, ("both arms", "both hands", f"{poss} arms")),
            "left": f"{poss} left arm", "right": f"{poss} right arm"}.get(hand, "")
    text = template.format(
        dir=seg.get("direction", ""), hand=hand, leg=seg.get("leg", ""), poss=poss, arms=arms, count=count_adverb,
        n="a" if count == 1 else COUNT_WORDS[count], s="" if count == 1 else "s", es="" if count == 1 else "es",
        degrees=_pick(rng, TURN_DEGREES[seg.get("angle", 90)]), noun=_pick(rng, TURN_NOUNS[seg.get("angle", 90)]),
    )
    if seg["action"] == "walk" and seg["speed"] != "normal":
        adverb = _pick(rng, SPEED_ADVERBS[seg["speed"]])
        text = f"{adverb} {text}" if adverb in ("slowly", "quickly") and rng.uniform() < 0.5 else f"{text} {adverb}"
    return " ".join(text.split())


def caption(params: dict, rng: np.random.Generator) -> str:
    """One caption of a motion: a subject, then its segments joined by connectives."""
    gender = ("neutral", "male", "female")[int(rng.choice(3, p=(0.6, 0.2, 0.2)))]
    subject = _pick(rng, SUBJECTS[gender])
    phrases = [segment_phrase(seg, rng, gender) for seg in params["segments"]]
    if len(phrases) == 1:
        body = phrases[0]
    elif len(phrases) == 3 and rng.uniform() < 0.5:
        body = f"first {phrases[0]}, then {phrases[1]}, and finally {phrases[2]}"
    else:
        body = phrases[0]
        for phrase in phrases[1:]:
            connective = _pick(rng, CONNECTIVES)
            if connective == ", after that " and gender in PRONOUN:
                connective = f", after that {PRONOUN[gender]} "
            body += connective + phrase
    text = f"{subject} {body}"
    return text + "." if rng.uniform() < 0.7 else text


def describe(params: dict, rng: np.random.Generator, count: int) -> list[str]:
    """`count` different captions of one motion (fewer only if the grammar cannot produce that many)."""
    captions: list[str] = []
    for _ in range(20 * count):
        text = caption(params, rng)
        if text not in captions:
            captions.append(text)
        if len(captions) == count:
            break
    return captions
