"""The text-to-motion metrics of Guo et al. (2022), as pure numpy functions on evaluator embeddings.

Every function takes embeddings computed by the evaluator (text `[N, d]`, motion `[N, d]`, row i of one
matching row i of the other) and returns plain floats. Distances are Euclidean, as in the T2M evaluation code.
Random choices take an explicit `np.random.Generator`, so a seeded evaluation is reproducible.
"""

from __future__ import annotations

import numpy as np
from scipy import linalg


def euclidean_distance_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pairwise Euclidean distances `D[i, j] = ||a_i - b_j||` of `a [N, d]` and `b [M, d]`, shape `[N, M]`."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    sq = (a * a).sum(1)[:, None] - 2.0 * a @ b.T + (b * b).sum(1)[None, :]
    return np.sqrt(np.maximum(sq, 0.0))


def r_precision(text_emb: np.ndarray, motion_emb: np.ndarray, pool: int = 32, top_k: int = 3) -> np.ndarray:
    """R-precision at 1..top_k: in consecutive batches of `pool` pairs, how often a text ranks its own motion
    among its k nearest motions (the true one plus pool - 1 mismatched ones).

    Follows the T2M code: rows of the `pool x pool` text-to-motion distance matrix are ranked by ascending
    distance (a tie with a mismatched motion counts as a miss), and the last incomplete batch is dropped.
    Returns `[top_k]` cumulative hit rates (R@1, R@2, ...).
    """
    n = len(text_emb)
    if len(motion_emb) != n:
        raise ValueError(f"text and motion embeddings must pair up, got {n} and {len(motion_emb)} rows")
    if n < pool:
        raise ValueError(f"R-precision needs at least one full batch of {pool} pairs, got {n}")
    hits = np.zeros(top_k)
    batches = n // pool
    for b in range(batches):
        sl = slice(b * pool, (b + 1) * pool)
        dist = euclidean_distance_matrix(text_emb[sl], motion_emb[sl])
        # rank of the true motion = number of other motions at most as far (a tie counts against it, so a
        # constant encoder scores 0, never 1)
        rank = (dist <= np.diag(dist)[:, None]).sum(1) - 1
        hits += np.array([(rank < k).sum() for k in range(1, top_k + 1)])
    return hits / (batches * pool)


def mm_dist(text_emb: np.ndarray, motion_emb: np.ndarray) -> float:
    """Multimodal distance ("matching score"): the mean Euclidean distance between each text and its own motion."""
    diff = np.asarray(text_emb, dtype=np.float64) - np.asarray(motion_emb, dtype=np.float64)
    return float(np.linalg.norm(diff, axis=1).mean())


def activation_statistics(emb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean `[d]` and unbiased covariance `[d, d]` of embeddings `[N, d]` (np.cov with rowvar=False)."""
    emb = np.asarray(emb, dtype=np.float64)
    if len(emb) < 2:
        raise ValueError(f"need at least 2 embeddings for a covariance, got {len(emb)}")
    return emb.mean(0), np.cov(emb, rowvar=False)


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray,
                     eps: float = 1e-6) -> float:
    """Frechet distance between two Gaussians: ||mu1 - mu2||^2 + Tr(S1 + S2 - 2 sqrtm(S1 S2)).

    If the matrix square root is not finite, `eps * I` is added to both covariances (as the T2M code does).
    An imaginary part above 1e-3 raises ValueError; a smaller one is numerical noise and is dropped.
    """
    mu1, mu2 = np.atleast_1d(mu1), np.atleast_1d(mu2)
    sigma1, sigma2 = np.atleast_2d(sigma1), np.atleast_2d(sigma2)
    diff = mu1 - mu2
    covmean = linalg.sqrtm(sigma1.dot(sigma2))
    if not np.isfinite(covmean).all():
        offset = np.eye(sigma1.shape[0]) * eps
        covmean = linalg.sqrtm((sigma1 + offset).dot(sigma2 + offset))
    if np.iscomplexobj(covmean):
        if not np.allclose(np.diagonal(covmean).imag, 0, atol=1e-3):
            raise ValueError(f"imaginary component {np.max(np.abs(covmean.imag)):.3g} in the FID matrix root")
        covmean = covmean.real
    return float(diff.dot(diff) + np.trace(sigma1) + np.trace(sigma2) - 2.0 * np.trace(covmean))


def fid(emb_a: np.ndarray, emb_b: np.ndarray) -> float:
    """FID between two sets of motion embeddings, each summarised by its mean and covariance."""
    return frechet_distance(*activation_statistics(emb_a), *activation_statistics(emb_b))


def diversity(emb: np.ndarray, num_pairs: int, rng: np.random.Generator) -> float:
    """Diversity: mean Euclidean distance of `num_pairs` random pairs. Each side of the pairs is drawn without
    replacement from the N embeddings, independently of the other side (T2M: 300 pairs)."""
    n = len(emb)
    if num_pairs > n:
        raise ValueError(f"diversity draws {num_pairs} indices without replacement but only {n} motions exist")
    first = rng.choice(n, num_pairs, replace=False)
    second = rng.choice(n, num_pairs, replace=False)
    return float(np.linalg.norm(np.asarray(emb[first], np.float64) - emb[second], axis=1).mean())


def multimodality(emb: np.ndarray, num_pairs: int, rng: np.random.Generator) -> float:
    """MultiModality: for embeddings `[C, G, d]` of G generations per caption, the mean distance of
    `num_pairs` random pairs of generations of the same caption (each side drawn without replacement from G,
    independently), averaged over captions (T2M: C = 100, G = 30, 10 pairs)."""
    emb = np.asarray(emb, dtype=np.float64)
    if emb.ndim != 3:
        raise ValueError(f"multimodality expects embeddings [captions, generations, dim], got shape {emb.shape}")
    captions, generations, _ = emb.shape
    if num_pairs > generations:
        raise ValueError(f"multimodality draws {num_pairs} of {generations} generations without replacement")
    first = np.stack([rng.choice(generations, num_pairs, replace=False) for _ in range(captions)])
    second = np.stack([rng.choice(generations, num_pairs, replace=False) for _ in range(captions)])
    rows = np.arange(captions)[:, None]
    return float(np.linalg.norm(emb[rows, first] - emb[rows, second], axis=-1).mean())


def mean_ci(values: np.ndarray | list[float]) -> tuple[float, float]:
    """Mean and 95% confidence half-width over R replications: 1.96 * std / sqrt(R), std the population std
    (np.std with ddof=0), exactly as the T2M evaluation scripts report `mean +- CI`."""
    values = np.asarray(values, dtype=np.float64)
    if values.size == 0:
        raise ValueError("mean_ci needs at least one value")
    return float(values.mean()), float(1.96 * values.std() / np.sqrt(values.size))


def sample_mean_ci(values: np.ndarray) -> tuple[float, float]:
    """Mean of per-sample scores and its 95% CI half-width (normal approximation, 1.96 * std(ddof=1) / sqrt(n));
    the half-width is NaN below two samples (and the mean too for none)."""
    values = np.asarray(values, dtype=np.float64)
    if values.size < 2:
        return float(values.mean()) if values.size else float("nan"), float("nan")
    return float(values.mean()), float(1.96 * values.std(ddof=1) / np.sqrt(values.size))


def paired_difference_ci(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """Mean of b - a and its 95% CI half-width (`sample_mean_ci` of the differences) for paired per-sample scores:
    two models scored on the same samples, so what they share cancels in the difference."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 1 or a.size < 2:
        raise ValueError(f"paired scores must be two 1-D arrays of the same length >= 2, got {a.shape} and {b.shape}")
    return sample_mean_ci(b - a)


def paired_difference_by_actions(first: np.ndarray, other: np.ndarray,
                                 actions: np.ndarray) -> dict[str, dict[str, float]]:
    """`paired_difference_ci` of `other - first` per number of actions in the caption (1 for "a person jumps", 3
    for a sequence of three): where a gain lands, simple captions or sequences. Each entry: samples, both means
    (first, mean), delta, ci95; a group of one sample is left out."""
    first, other, actions = np.asarray(first), np.asarray(other), np.asarray(actions)
    out = {}
    for n in sorted(set(actions.tolist())):
        sel = actions == n
        if sel.sum() >= 2:
            diff, ci = paired_difference_ci(first[sel], other[sel])
            out[str(n)] = {"samples": int(sel.sum()), "first": float(first[sel].mean()),
                           "mean": float(other[sel].mean()), "delta": diff, "ci95": ci}
    return out


def caption_actions(params: list[dict]) -> np.ndarray:
    """[N] the number of actions in each embedded-data caption (its parameters' segments)."""
    return np.array([len(p["segments"]) for p in params], dtype=np.int64)


def actions_label(n: str) -> str:
    """"1 action", "2 actions": the key of a by-actions breakdown as a reader says it."""
    return f"{n} action{'' if n == '1' else 's'}"


def by_actions_text(groups: dict[str, dict[str, float]]) -> str:
    """`paired_difference_by_actions` on one line: "1 action +0.029 ± 0.021 (520), 2 actions ..."."""
    return ", ".join(f"{actions_label(n)} {v['delta']:+.3f} ± {v['ci95']:.3f} ({v['samples']})"
                     for n, v in groups.items())
