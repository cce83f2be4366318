"""How well a reward model ranks a policy's OWN samples, measured against the caption oracle (embedded data only).

SoPo uses the reward for two decisions per caption: which of the policy's K samples is x^l (argmin r) and whether
it is bad enough to push away (r(x^l, c) < tau). Retrieval on real motions (what `sopo reward train` reports)
says little about either: the policy's samples are off the data manifold and differ from each other in details
(a hand, a count, a direction). So `check_reward` samples K motions per caption from a policy, scores each with
the reward model and with the oracle, and reports per split:

    agreement          over pairs of samples of one caption whose oracle scores differ, the fraction the reward
                       orders the same way (0.5 = chance, 1 = a perfect ranker; reward ties count 1/2)
    oracle_mean        mean oracle score of all samples
    oracle_reward_best oracle score of the reward's best of K (best_of_k_gain = this - oracle_mean)
    oracle_reward_worst oracle score of the reward's worst of K (SoPo's x^l)
    oracle_best        oracle score of the oracle's own best of K (the ceiling of any ranker)
    gate_rate          fraction of groups whose worst reward is below tau (SoPo's x^l term on)
    real_over_sample   fraction of (x^w, sample) pairs where the dataset motion scores higher
    tau_for_gate       the tau that would gate 10/30/50% of these groups (quantiles of min_k r)
    single_clause      per oracle clause (e.g. `clap.count`): over sample pairs of one caption that differ in that
                       clause alone, the fraction the reward ranks the one satisfying it higher, and the pairs
    clause_variation   where the K samples can teach at all (`clause_variation`): how often a caption's samples
                       disagree on a clause, and how many of their failures every sample of the caption shares
    by_actions         the agreement per number of actions in the caption (1: "a person jumps"; 2-3: sequences)

On the split's real motions, `count_probe` also asks the reward how many times each caption's action repeats (the
caption among its once / twice / three times / four times variants that it scores highest), on the motion as it
is and padded by standing still to the split's full width: a reward that counts by the clip's length fails the
second (docs/evaluation.md); `order_probe` asks whether it prefers a caption's own order of actions to the same
caption with two neighbouring actions swapped.

Everything is seeded: one seed gives the same captions and initial noises for every reward model compared.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from itertools import combinations
from typing import Any

import numpy as np
import torch

from sopo_ray.data.dataset import MotionDataset
from sopo_ray.data.synthetic.oracle import oracle_score
from sopo_ray.distributed.seeds import derive_seed
from sopo_ray.evaluation.metrics import caption_actions, sample_mean_ci
from sopo_ray.reward.hard_negatives import COUNT_WORDS, hold_pad, reorderings

GATE_FRACTIONS = (0.1, 0.3, 0.5)
_COUNT_RE = re.compile(r"\b(" + "|".join(COUNT_WORDS) + r")\b", re.IGNORECASE)


@dataclass
class GroupScores:
    """Reward and oracle scores of K policy samples for each of N captions."""

    rewards: np.ndarray
    """[N, K] r(x^k, c)."""
    oracle: np.ndarray
    """[N, K] oracle score of each sample against its caption's parameters."""
    reward_real: np.ndarray
    """[N] r(x^w, c) of the dataset motion."""
    clauses: list[list[dict[str, bool]]] | None = None
    """[N][K] the oracle's clauses of each sample (clause name -> satisfied), if kept."""
    actions: np.ndarray | None = None
    """[N] the number of actions in each caption (its parameters' segments), if kept."""


@torch.no_grad()
def score_policy_samples(policy: Any, reward: Any, dataset: MotionDataset, *, k: int, num_captions: int,
                         steps: int, guidance: float, eta: float, seed: int = 0,
                         batch_captions: int = 32) -> GroupScores:
    """Sample K motions for `num_captions` seeded captions of `dataset` (one per motion) and score them."""
    if dataset.params is None:
        raise ValueError("the reward check needs the oracle: use the embedded synthetic dataset")
    rng = np.random.default_rng([seed, 31])
    idx = rng.choice(len(dataset), min(num_captions, len(dataset)), replace=False)
    captions = [dataset.captions[i][rng.integers(len(dataset.captions[i]))] for i in idx]
    rewards, oracle, real, clauses = [], [], [], []
    for s in range(0, len(idx), batch_captions):
        part, caps = idx[s:s + batch_captions], captions[s:s + batch_captions]
        lens = np.repeat(dataset.lengths[part], k)
        seeds = [derive_seed(seed, "reward-check", int(i), j) for i in part for j in range(k)]
        text = policy.encode_text(caps).repeat_interleave(k, dim=0)
        samples = policy.sample(text, torch.from_numpy(lens), seeds, steps=steps, guidance=guidance,
                                eta=eta).cpu().numpy()
        rep_caps = [c for c in caps for _ in range(k)]
        rewards.append(reward.score(samples, lens, rep_caps).cpu().numpy().reshape(-1, k))
        judged = [oracle_score(m[:n], dataset.params[i])
                  for m, n, i in zip(samples, lens, np.repeat(part, k), strict=True)]
        oracle.append(np.array([j.score for j in judged]).reshape(-1, k))
        clauses += [[j.clauses for j in judged[g:g + k]] for g in range(0, len(judged), k)]
        real.append(reward.score(dataset.features[part], dataset.lengths[part], caps).cpu().numpy())
    actions = caption_actions([dataset.params[i] for i in idx])
    return GroupScores(np.concatenate(rewards), np.concatenate(oracle), np.concatenate(real), clauses, actions)


def pairwise_agreement(rewards: np.ndarray, oracle: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per group: (agreeing pairs, informative pairs), over sample pairs whose oracle scores differ.
    A pair agrees when the reward orders it as the oracle does; a reward tie counts 1/2."""
    n, k = rewards.shape
    i, j = np.triu_indices(k, 1)
    d_oracle = oracle[:, i] - oracle[:, j]
    d_reward = rewards[:, i] - rewards[:, j]
    informative = np.abs(d_oracle) > 1e-9
    agree = np.where(d_reward == 0, 0.5, (np.sign(d_reward) == np.sign(d_oracle)).astype(float))
    return (agree * informative).sum(1), informative.sum(1).astype(float)


def clause_agreement(rewards: np.ndarray, clauses: list[list[dict[str, bool]]]) -> dict[str, list[float]]:
    """Clause kind (the clause name without its segment, e.g. `clap.count`) -> [agreement, pairs], over the sample
    pairs of one caption whose oracle clauses differ in exactly one clause: the fraction where the reward ranks the
    sample that satisfies it higher (a reward tie counts 1/2). Most pairs first."""
    votes: dict[str, list[float]] = {}
    for r, group in zip(rewards, clauses, strict=True):
        for a, b in combinations(range(len(group)), 2):
            if group[a].keys() != group[b].keys():
                continue
            differ = [c for c in group[a] if group[a][c] != group[b][c]]
            if len(differ) != 1:
                continue
            good, bad = (a, b) if group[a][differ[0]] else (b, a)
            vote = 0.5 if r[good] == r[bad] else float(r[good] > r[bad])
            votes.setdefault(differ[0].split(":", 1)[-1], []).append(vote)
    return {kind: [float(np.mean(v)), float(len(v))] for kind, v in sorted(votes.items(), key=lambda kv: -len(kv[1]))}


def clause_variation(clauses: list[list[dict[str, bool]]]) -> dict[str, Any]:
    """Whether a caption's K samples differ in what the oracle checks: a clause that all K fail (or all pass) gives
    no choice of x^w or x^l among them a right and a wrong version to contrast.

    Over the (caption, clause) cells judged on every sample of the caption: `varying`, the fraction of cells whose
    samples disagree; `shared_failures`, of all failed (sample, clause) checks, the fraction in cells that every
    sample fails; `kinds`, clause kind (the name without its segment) -> [fraction of samples satisfying it,
    fraction of its cells varying, cells], most cells first.
    """
    cells: dict[str, list[tuple[int, int]]] = {}
    for group in clauses:
        for name in set(group[0]).intersection(*group[1:]):
            passed = sum(sample[name] for sample in group)
            cells.setdefault(name.split(":", 1)[-1], []).append((passed, len(group)))
    flat = [cell for kind in cells.values() for cell in kind]
    failed = sum(n - p for p, n in flat)
    return {
        "cells": len(flat),
        "varying": float(np.mean([0 < p < n for p, n in flat])) if flat else float("nan"),
        "shared_failures": sum(n for p, n in flat if p == 0) / failed if failed else float("nan"),
        "kinds": {kind: [sum(p for p, _ in v) / sum(n for _, n in v), float(np.mean([0 < p < n for p, n in v])),
                         float(len(v))]
                  for kind, v in sorted(cells.items(), key=lambda kv: -len(kv[1]))},
    }


def _bootstrap_ci(num: np.ndarray, den: np.ndarray, seed: int = 0, draws: int = 1000) -> float:
    """95% CI half-width of sum(num) / sum(den), resampling groups."""
    if den.sum() == 0:
        return float("nan")
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, len(num), size=(draws, len(num)))
    ratios = num[picks].sum(1) / np.maximum(den[picks].sum(1), 1e-12)
    lo, hi = np.percentile(ratios, [2.5, 97.5])
    return float((hi - lo) / 2)


def ranking_figures(scores: GroupScores, tau: float) -> dict[str, Any]:
    """The figures of the module docstring (each as [mean, 95% CI half-width] where it has one)."""
    r, o = scores.rewards, scores.oracle
    rows = np.arange(len(r))
    agree, pairs = pairwise_agreement(r, o)
    reward_best, reward_worst = o[rows, r.argmax(1)], o[rows, r.argmin(1)]
    mean = o.mean(1)
    return {
        "groups": len(r), "k": r.shape[1], "informative_pairs": int(pairs.sum()),
        "agreement": [float(agree.sum() / max(pairs.sum(), 1)), _bootstrap_ci(agree, pairs)],
        "oracle_mean": list(sample_mean_ci(mean)),
        "oracle_reward_best": list(sample_mean_ci(reward_best)),
        "oracle_reward_worst": list(sample_mean_ci(reward_worst)),
        "oracle_best": list(sample_mean_ci(o.max(1))),
        "best_of_k_gain": list(sample_mean_ci(reward_best - mean)),
        "gate_rate": float((r.min(1) < tau).mean()),
        "tau": float(tau),
        "tau_for_gate": {f"{q:g}": float(np.quantile(r.min(1), q)) for q in GATE_FRACTIONS},
        "reward_sample_mean": float(r.mean()),
        "reward_real_mean": float(scores.reward_real.mean()),
        "real_over_sample": float((scores.reward_real[:, None] > r).mean()),
        "single_clause": {} if scores.clauses is None else clause_agreement(r, scores.clauses),
        "clause_variation": {} if scores.clauses is None else clause_variation(scores.clauses),
        "by_actions": {} if scores.actions is None else agreement_by_actions(agree, pairs, scores.actions),
    }


def agreement_by_actions(agree: np.ndarray, pairs: np.ndarray, actions: np.ndarray) -> dict[str, list[float]]:
    """Per number of actions n in the caption: [agreement, its 95% CI, captions] over the groups with n actions
    (`agree`, `pairs`: per group, from `pairwise_agreement`); counts without an informative pair are left out."""
    out = {}
    for n in sorted(set(actions.tolist())):
        sel = actions == n
        if pairs[sel].sum() > 0:
            out[str(n)] = [float(agree[sel].sum() / pairs[sel].sum()), _bootstrap_ci(agree[sel], pairs[sel]),
                           int(sel.sum())]
    return out


def _score_captions(reward: Any, motion: np.ndarray, length: int, captions: list[str]) -> torch.Tensor:
    """The reward of one motion `[T, D]` (its first `length` frames) under each of `captions`, `[len(captions)]`."""
    batch = np.repeat(motion[None], len(captions), 0)
    return torch.as_tensor(reward.score(batch, [length] * len(captions), captions))


@torch.no_grad()
def count_probe(reward: Any, dataset: MotionDataset) -> dict[str, float]:
    """How often the reward picks a real motion's own count among its first caption's count variants, as the
    motion is (`as_is`) and followed by standing still to the dataset's full width (`padded`, which changes
    nothing the motion does), over the `motions` whose first caption names exactly one count."""
    width = dataset.features.shape[1]
    hits: dict[str, list[bool]] = {"as_is": [], "padded": []}
    for features, length, captions in zip(dataset.features, dataset.lengths, dataset.captions, strict=True):
        found = _COUNT_RE.findall(captions[0])
        if len(found) != 1:
            continue
        own = COUNT_WORDS.index(found[0].lower())
        variants = [_COUNT_RE.sub(word, captions[0]) for word in COUNT_WORDS]
        n = int(length)
        for key, motion, frames in (("as_is", features, n), ("padded", hold_pad(features, n, width, 0), width)):
            hits[key].append(int(_score_captions(reward, motion, frames, variants).argmax()) == own)
    return {"motions": len(hits["as_is"]), **{k: float(np.mean(v)) if v else float("nan") for k, v in hits.items()}}


@torch.no_grad()
def order_probe(reward: Any, dataset: MotionDataset) -> dict[str, float]:
    """How often the reward scores a real motion's first caption above every reordering of it (two neighbouring
    actions swapped: `hard_negatives.reorderings`), over the `motions` whose first caption has one; 0.5 is blind
    to order for two actions."""
    hits = []
    for features, length, captions in zip(dataset.features, dataset.lengths, dataset.captions, strict=True):
        variants = [captions[0], *reorderings(captions[0])]
        if len(variants) > 1:
            scores = _score_captions(reward, features, int(length), variants)
            hits.append(bool(scores[0] > scores[1:].max()))
    return {"motions": len(hits), "own_order": float(np.mean(hits)) if hits else float("nan")}
