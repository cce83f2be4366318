"""Across training seeds: each method's metrics as mean +- 95% CI over its seeds, and whether SoPo beats a row.

A claim about a method is a claim over training runs, so `sopo experiment compare` trains every method with each
of `experiment.seeds` (caption order, rollout noise, learner draws all follow the run seed) and evaluates every
resulting policy with one evaluation seed (the same captions, lengths and initial noise for every model). A
method's number is then the mean over its seeds of each policy's mean over evaluation replications, and its CI
is Student's t over the seeds. The base model has no training seed: its CI is over evaluation replications.

`verdict` compares two rows per metric in the metric's own direction (higher R-precision, oracle, reward and
MultiModality; lower FID and MM-Dist; Diversity closer to the real motions'): "better" or "worse" only when the
two 95% intervals do not overlap, "tie" otherwise.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import stats

Cell = list[float]
"""[mean, 95% CI half-width]."""
Table = dict[str, Cell]
"""metric -> Cell."""

HIGHER = ("R@1", "R@2", "R@3", "Oracle", "Oracle-all", "Reward", "MultiModality")
LOWER = ("FID", "MM-Dist")
TOWARD_REAL = ("Diversity",)


def over_seeds(tables: list[Table]) -> Table:
    """Mean and t-based 95% CI half-width over the seeds' means (one table per seed); a single seed keeps its
    evaluation CI."""
    if len(tables) == 1:
        return {k: list(v) for k, v in tables[0].items()}
    out: Table = {}
    for key in tables[0]:
        values = np.array([t[key][0] for t in tables if key in t], dtype=float)
        half = float(stats.t.ppf(0.975, len(values) - 1) * values.std(ddof=1) / math.sqrt(len(values)))
        out[key] = [float(values.mean()), half]
    return out


def delta_over_seeds(tables: list[Table], base: Table) -> Table:
    """Each seed's metric minus the base's, as mean and t-based 95% CI half-width over the seeds. The base is one
    fixed model evaluated on the same captions, lengths and noises, so this asks whether training the method moves
    the base on these samples across training seeds (the base's own sampling noise is shared, not counted)."""
    shifted = [{k: [t[k][0] - base[k][0], t[k][1]] for k in t if k in base} for t in tables]
    return over_seeds(shifted)


def paired_delta_over_seeds(a: list[Table], b: list[Table]) -> Table:
    """Row a minus row b seed by seed (`a[i]`, `b[i]`: the same training seed, evaluated on the same samples), as
    mean and t-based 95% CI half-width over the seeds. What a seed shares between two methods (its caption order,
    its draws, the evaluation's samples) cancels, so this resolves differences that two rows' own intervals
    cannot. Needs at least two seeds."""
    if len(a) != len(b) or len(a) < 2:
        raise ValueError(f"paired differences need the same number of seeds (>= 2) in both rows, got {len(a)} and "
                         f"{len(b)}")
    return over_seeds([{k: [ta[k][0] - tb[k][0], 0.0] for k in ta if k in tb} for ta, tb in zip(a, b, strict=True)])


def compare_cells(metric: str, a: Cell, b: Cell, real: Cell | None = None) -> str:
    """'better' if row a beats row b on `metric` with disjoint 95% intervals, 'worse' if b beats a, else 'tie'."""
    lo_a, hi_a, lo_b, hi_b = a[0] - a[1], a[0] + a[1], b[0] - b[1], b[0] + b[1]
    if metric in TOWARD_REAL:
        if real is None:
            return "tie"
        # distance to the real value, with the interval carried over
        dist_a = sorted((abs(lo_a - real[0]), abs(hi_a - real[0])))
        dist_b = sorted((abs(lo_b - real[0]), abs(hi_b - real[0])))
        if lo_a <= real[0] <= hi_a:
            dist_a[0] = 0.0
        if lo_b <= real[0] <= hi_b:
            dist_b[0] = 0.0
        lo_a, hi_a, lo_b, hi_b = -dist_a[1], -dist_a[0], -dist_b[1], -dist_b[0]
    elif metric in LOWER:
        lo_a, hi_a, lo_b, hi_b = -hi_a, -lo_a, -hi_b, -lo_b
    elif metric not in HIGHER:
        return "tie"
    if lo_a > hi_b:
        return "better"
    if hi_a < lo_b:
        return "worse"
    return "tie"


def verdict(sopo: Table, other: Table, real: Table | None = None) -> dict[str, str]:
    """Per metric both rows have: SoPo 'better' / 'worse' / 'tie' against `other`."""
    return {k: compare_cells(k, sopo[k], other[k], (real or {}).get(k)) for k in sopo if k in other}
