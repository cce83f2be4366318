"""The evaluation protocol of the paper's tables: T2M metrics over seeded replications, mean +- 95% CI.

One replication: draw `num_captions` held-out motions (a multiple of the R-precision pool; each with one of its
captions, chosen at random), generate one motion per caption at the real motion's length, embed both with the
evaluator, and compute R-precision@1/2/3, FID (against the whole split's real motions), MM-Dist, Diversity;
then generate `mm_generations` motions for each of `mm_captions` of those captions for MultiModality. Two more
columns come from outside the evaluator: the oracle score of the embedded dataset (how well the motion obeys its
caption's parameters; synthetic data only) and the mean reward of the reward model. Replication r is seeded by
(seed, r), so two models evaluated with one seed see the same captions, lengths and initial noises.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

import numpy as np
import torch
from rich.progress import Progress

from sopo_ray.config import Config
from sopo_ray.data.dataset import MotionDataset
from sopo_ray.data.synthetic.oracle import oracle_score
from sopo_ray.errors import DataError
from sopo_ray.evaluation import metrics
from sopo_ray.evaluation.evaluator import T2MEvaluator
from sopo_ray.reward.tmr import TMRReward

# Column order of the paper's tables, then this project's two extra columns.
COLUMNS = ("R@1", "R@2", "R@3", "FID", "MM-Dist", "Diversity", "MultiModality", "Oracle", "Reward")

MetricTable = dict[str, tuple[float, float]]
# (dataset indices [B], captions [B], lengths [B], seeds [B]) -> un-normalised features [B, T, D]
MotionSource = Callable[[np.ndarray, list[str], np.ndarray, list[int]], np.ndarray]


class Generator(Protocol):
    """What evaluation needs of a generator (contract C's MotionGenerator satisfies it)."""

    def encode_text(self, captions: list[str]) -> torch.Tensor: ...

    def sample(self, text_emb: torch.Tensor, lengths: torch.Tensor, seeds: list[int], steps: int,
               guidance: float, eta: float, fast: bool) -> torch.Tensor: ...


def generator_source(generator: Generator, cfg: Config) -> MotionSource:
    """Generate with `cfg.diffusion.sample_steps` DDIM steps, the configured guidance, eta and sampler
    (`diffusion.fast_sampler`), in batches of `cfg.evaluator.generate_batch_size`."""
    batch = cfg.evaluator.generate_batch_size

    def generate(idx: np.ndarray, captions: list[str], lengths: np.ndarray, seeds: list[int]) -> np.ndarray:
        t_max = int(np.max(lengths))
        parts = []
        for s in range(0, len(captions), batch):
            n = torch.as_tensor(lengths[s:s + batch], dtype=torch.long)
            with torch.no_grad():
                x = generator.sample(generator.encode_text(captions[s:s + batch]), n, seeds[s:s + batch],
                                     steps=cfg.diffusion.sample_steps, guidance=cfg.diffusion.guidance_scale,
                                     eta=cfg.diffusion.ddim_eta, fast=cfg.diffusion.fast_sampler)
            x = x.detach().cpu().float().numpy()
            parts.append(np.pad(x, ((0, 0), (0, t_max - x.shape[1]), (0, 0))))
        return np.concatenate(parts)

    return generate


def real_source(dataset: MotionDataset) -> MotionSource:
    """The dataset's own motions (the "Real" reference row)."""

    def real(idx: np.ndarray, captions: list[str], lengths: np.ndarray, seeds: list[int]) -> np.ndarray:
        return np.asarray(dataset.features[idx, : int(np.max(lengths))], dtype=np.float32)

    return real


def oracle_accuracy(motions: np.ndarray, lengths: np.ndarray, params: list[dict]) -> float:
    """Mean oracle score in [0, 1] of motions `[B, T, D]` against the parameters their captions came from."""
    return float(np.mean([oracle_score(m[:n], p).score for m, n, p in zip(motions, lengths, params, strict=True)]))


def oracle_per_motion(generator: Generator, dataset: MotionDataset, cfg: Config, seed: int = 0) -> np.ndarray:
    """Oracle score of one generation per motion of `dataset` (embedded data only), `[N]`: motion i with its
    caption i mod (its number of captions) at its own length, noise seeded by (seed, i). Two generators scored
    with one seed see the same captions, lengths and noises, so their scores pair up sample by sample."""
    if dataset.params is None:
        raise DataError("the oracle needs the embedded dataset's caption parameters; this split has none")
    idx = np.arange(len(dataset))
    captions = [dataset.captions[i][i % len(dataset.captions[i])] for i in idx]
    lengths = np.asarray(dataset.lengths)[idx]
    seeds = [int(np.random.default_rng([seed, 7, int(i)]).integers(0, 2**31 - 1)) for i in idx]
    motions = generator_source(generator, cfg)(idx, captions, lengths, seeds)
    return np.asarray([oracle_score(m[:n], dataset.params[i]).score
                       for m, n, i in zip(motions, lengths, idx, strict=True)])


def _replication(source: MotionSource, evaluator: T2MEvaluator, reward: TMRReward | None, dataset: MotionDataset,
                 cfg: Config, gt_stats: tuple[np.ndarray, np.ndarray], rng: np.random.Generator,
                 multimodality: bool) -> dict[str, float]:
    ecfg = cfg.evaluator
    pool = ecfg.r_precision_pool
    n = min(ecfg.num_captions, len(dataset)) // pool * pool
    idx = rng.choice(len(dataset), n, replace=False)  # random order: each R-precision batch is a random pool
    captions = [dataset.captions[i][rng.integers(len(dataset.captions[i]))] for i in idx]
    lengths = np.asarray(dataset.lengths)[idx]
    seeds = rng.integers(0, 2**31 - 1, size=n).tolist()
    motions = source(idx, captions, lengths, seeds)

    z_m = evaluator.embed_motions(motions, lengths)
    z_t = evaluator.embed_texts(captions)
    row = {f"R@{k + 1}": float(v) for k, v in enumerate(metrics.r_precision(z_t, z_m, pool, 3))}
    row["FID"] = metrics.frechet_distance(*gt_stats, *metrics.activation_statistics(z_m))
    row["MM-Dist"] = metrics.mm_dist(z_t, z_m)
    row["Diversity"] = metrics.diversity(z_m, min(ecfg.diversity_pairs, n), rng)
    if dataset.params is not None:
        row["Oracle"] = oracle_accuracy(motions, lengths, [dataset.params[i] for i in idx])
    if reward is not None:
        row["Reward"] = float(reward.score(motions, lengths, captions).mean())
    if multimodality and ecfg.mm_captions > 0 and ecfg.mm_generations > 1:
        pick = rng.choice(n, min(ecfg.mm_captions, n), replace=False)
        rep = np.repeat(pick, ecfg.mm_generations)
        mm_seeds = rng.integers(0, 2**31 - 1, size=len(rep)).tolist()
        mm_motions = source(idx[rep], [captions[i] for i in rep], lengths[rep], mm_seeds)
        emb = evaluator.embed_motions(mm_motions, lengths[rep]).reshape(len(pick), ecfg.mm_generations, -1)
        row["MultiModality"] = metrics.multimodality(emb, min(ecfg.mm_pairs, ecfg.mm_generations), rng)
    return row


def run_protocol(source: MotionSource, evaluator: T2MEvaluator, reward: TMRReward | None,
                 dataset: MotionDataset, cfg: Config, seed: int = 0, multimodality: bool = True,
                 progress: bool = False, label: str = "evaluate") -> tuple[MetricTable, list[dict[str, float]]]:
    """Run `cfg.evaluator.replications` replications of the protocol on motions from `source`.

    Returns ({metric: (mean, 95% CI half-width)}, the per-replication values). Metrics that do not apply
    (Oracle without parameters, Reward without a model, MultiModality for real data) are absent.
    """
    pool = cfg.evaluator.r_precision_pool
    if len(dataset) < pool:
        raise DataError(f"the split has {len(dataset)} motions, fewer than the R-precision pool of {pool}; "
                        "use a larger dataset or --set evaluator.r_precision_pool=<smaller>")
    evaluator.eval()
    if reward is not None:
        reward.eval()
    gt_stats = metrics.activation_statistics(evaluator.embed_motions(dataset.features, dataset.lengths))
    rows = []
    with Progress(disable=not progress, transient=True) as bar:
        task = bar.add_task(label, total=cfg.evaluator.replications)
        for r in range(cfg.evaluator.replications):
            rng = np.random.default_rng([seed, r])
            rows.append(_replication(source, evaluator, reward, dataset, cfg, gt_stats, rng, multimodality))
            bar.update(task, advance=1)
    table = {k: metrics.mean_ci([row[k] for row in rows]) for k in COLUMNS if k in rows[0]}
    return table, rows


def evaluate_generator(generator: Generator, evaluator: T2MEvaluator, reward: TMRReward | None,
                       dataset: MotionDataset, cfg: Config, seed: int = 0, progress: bool = False) -> MetricTable:
    """All metrics of `generator` on `dataset` (a held-out split): {metric: (mean, 95% CI)} over replications."""
    if hasattr(generator, "eval"):
        generator.eval()
    return run_protocol(generator_source(generator, cfg), evaluator, reward, dataset, cfg, seed, True, progress,
                        "generated")[0]


def evaluate_real(evaluator: T2MEvaluator, reward: TMRReward | None, dataset: MotionDataset, cfg: Config,
                  seed: int = 0, progress: bool = False) -> MetricTable:
    """The "Real" reference row: the same protocol with the split's own motions in place of generations
    (no MultiModality: a caption has one real motion)."""
    return run_protocol(real_source(dataset), evaluator, reward, dataset, cfg, seed, False, progress, "real")[0]
