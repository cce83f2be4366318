"""Training the TMR-style reward model: symmetric InfoNCE with hard negatives (`reward.hard_negatives`).

`train_reward(cfg)` is what `sopo reward train` runs: train split only for the weights and the normaliser,
val split for text-to-motion retrieval (R@1/R@5, reported in the checkpoint and the metrics file).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn
from torch import Tensor

from sopo_ray.config import Config, RewardConfig
from sopo_ray.data.dataset import MotionDataset
from sopo_ray.fitting import fit_and_save
from sopo_ray.lr_schedule import warmup_cosine
from sopo_ray.models.text_encoder import get_text_encoder
from sopo_ray.motion.mirror import mirror_caption, mirror_features
from sopo_ray.reward.hard_negatives import CORRUPTIONS, corrupt, counterfactuals, hold_pad, reorderings
from sopo_ray.reward.tmr import KIND, TMRReward
from sopo_ray.tracking import MetricsWriter


def feature_statistics(features: np.ndarray, lengths: np.ndarray, min_std: float = 1e-4,
                       chunk: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """Per-dimension mean and std `[D]` over the valid frames of `[N, T, D]` features (padding excluded).

    Dimensions that never vary (std < min_std) get std 1, so they pass through centred instead of exploding.
    """
    d = features.shape[-1]
    total, total_sq, count = np.zeros(d), np.zeros(d), 0
    for start in range(0, len(features), chunk):
        x = features[start:start + chunk].astype(np.float64)
        mask = np.arange(x.shape[1])[None, :] < lengths[start:start + chunk, None]
        valid = x[mask]
        total += valid.sum(0)
        total_sq += (valid * valid).sum(0)
        count += len(valid)
    if count == 0:
        raise ValueError("no valid frames to compute feature statistics from")
    mean = total / count
    std = np.sqrt(np.maximum(total_sq / count - mean * mean, 0.0))
    return mean.astype(np.float32), np.where(std < min_std, 1.0, std).astype(np.float32)


def contrastive_loss(z_text: Tensor, z_motion: Tensor, same_text: Tensor, temperature: float,
                     sentence_emb: Tensor | None = None, negative_filter: float = 1.0, z_hard: Tensor | None = None,
                     hard_valid: Tensor | None = None, z_broken: Tensor | None = None) -> Tensor:
    """Symmetric InfoNCE over a batch of unit vectors `[B, d]` (row i of each is a positive pair).

    Off-diagonal pairs with the same caption text (`same_text` [B, B], e.g. a motion and its mirror when the
    caption names no side) are not negatives, and neither are pairs whose frozen sentence embeddings have
    similarity (cos + 1) / 2 above `negative_filter` (TMR's near-duplicate filter; 1 switches it off).
    `z_hard` [B, d] adds one extra negative caption per motion (a counterfactual of its own caption) to the
    motion-to-text direction, where `hard_valid` [B] is true. `z_broken` [B, d] adds one extra negative motion per
    caption (its own motion, corrupted: `hard_negatives.corrupt`) to the text-to-motion direction.
    """
    logits = z_text @ z_motion.T / temperature
    eye = torch.eye(len(logits), dtype=torch.bool, device=logits.device)
    not_negative = same_text & ~eye
    if sentence_emb is not None and negative_filter < 1.0:
        sent = F.normalize(sentence_emb, dim=-1)
        not_negative |= ((sent @ sent.T + 1.0) / 2.0 > negative_filter) & ~eye
    logits = logits.masked_fill(not_negative, float("-inf"))
    target = torch.arange(len(logits), device=logits.device)
    motion_to_text = logits.T
    if z_broken is not None:
        logits = torch.cat([logits, (z_text * z_broken).sum(-1, keepdim=True) / temperature], dim=1)
    if z_hard is not None:
        hard = (z_motion * z_hard).sum(-1, keepdim=True) / temperature
        if hard_valid is not None:
            hard = hard.masked_fill(~hard_valid[:, None], float("-inf"))
        motion_to_text = torch.cat([motion_to_text, hard], dim=1)
    return (F.cross_entropy(logits, target) + F.cross_entropy(motion_to_text, target)) / 2.0


def recall_at(sim: Tensor, ks: tuple[int, ...]) -> dict[int, float]:
    """Text-to-motion recall: row i of `sim [N, N]` (text i vs all motions) hits if motion i ranks in the top k.
    Ties with another motion count as misses."""
    rank = (sim >= sim.diagonal()[:, None]).sum(1) - 1
    return {k: float((rank < k).float().mean()) for k in ks}


@torch.no_grad()
def embed_dataset(model: TMRReward, dataset: MotionDataset, batch_size: int = 256) -> tuple[Tensor, Tensor]:
    """Unit motion embeddings of every motion and text embeddings of each motion's first caption, `[N, d]` each."""
    z_m = torch.cat([model.encode_motion(dataset.features[i:i + batch_size], dataset.lengths[i:i + batch_size])
                     for i in range(0, len(dataset), batch_size)])
    z_t = model.encode_text([c[0] for c in dataset.captions])
    return z_t, z_m


def retrieval_metrics(model: TMRReward, dataset: MotionDataset, seed: int = 0) -> dict[str, float]:
    """Text-to-motion retrieval R@1/R@5 on `dataset`, one query per motion (its first caption), in three of
    TMR's protocols: `all` ranks among every motion of the split; `b32` among random batches of 32 (the rest
    dropped); `all_thr` is `all` but a retrieved motion also counts when its caption is a near-paraphrase of the
    query (sentence similarity (cos + 1) / 2 >= 0.95), which a grammar-made dataset has many of."""
    was_training = model.training
    model.eval()
    z_t, z_m = embed_dataset(model, dataset)
    model.train(was_training)
    sim = z_t @ z_m.T
    out = {f"retrieval/all_R@{k}": v for k, v in recall_at(sim, (1, 5)).items()}
    sent = F.normalize(model.text_inputs([c[0] for c in dataset.captions]).sentences, dim=-1)
    same_text = (sent @ sent.T + 1.0) / 2.0 >= 0.95
    top = sim.topk(min(5, len(dataset)), dim=1).indices
    for k in (1, 5):
        out[f"retrieval/all_thr_R@{k}"] = float(same_text.gather(1, top[:, :k]).any(1).float().mean())
    perm = torch.as_tensor(np.random.default_rng(seed).permutation(len(dataset)))
    batches = len(dataset) // 32
    if batches:
        hits = [recall_at(sim[b][:, b], (1, 5)) for b in perm[: batches * 32].reshape(batches, 32)]
        out.update({f"retrieval/b32_R@{k}": float(np.mean([h[k] for h in hits])) for k in (1, 5)})
    out["retrieval/pool_all"] = float(len(dataset))
    return out


def pad_lengths(features: np.ndarray, lengths: np.ndarray, prob: float,
                rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Each motion of the batch, with probability `prob`, stands still before and after itself up to a random
    length in [its length, the batch width] (`hard_negatives.hold_pad`)."""
    out, new = features.copy(), lengths.copy()
    for b in np.flatnonzero(rng.random(len(lengths)) < prob):
        n = int(lengths[b])
        new[b] = int(rng.integers(n, features.shape[1] + 1))
        out[b] = hold_pad(features[b], n, int(new[b]), int(rng.integers(0, new[b] - n + 1)))
    return out, new


MAX_COUNTERFACTUALS = 2
"""Counterfactuals kept per caption (drawn once, seeded): enough variety, and the sentence encoder embeds ~3x the
train captions instead of ~5x."""


class TrainingPairs:
    """The reward's training pool: every train motion with its captions, optionally each beside its left-right
    mirror with the mirrored captions, and up to two counterfactuals of every caption, all embedded once (the
    sentence embeddings kept in the cache file `cache`, if given, for the next training) as `model` reads them."""

    def __init__(self, train: MotionDataset, rcfg: RewardConfig, model: TMRReward, cache: Path | None = None) -> None:
        self.features, self.lengths = [train.features], train.lengths
        captions = [list(c) for c in train.captions]
        if rcfg.mirror:
            self.features.append(mirror_features(train.features))
            captions += [[mirror_caption(c) for c in caps] for caps in train.captions]
        texts = sorted({c for caps in captions for c in caps})
        rng = np.random.default_rng(rcfg.seed)
        hard: dict[str, list[str]] = {}
        if rcfg.counterfactual_negatives:
            for c in texts:
                options = counterfactuals(c)
                keep = rng.permutation(len(options))[:MAX_COUNTERFACTUALS]
                hard[c] = [options[i] for i in sorted(keep)]
        if rcfg.order_negatives:
            for c in texts:
                hard[c] = hard.get(c, []) + reorderings(c)
        self.texts = sorted(set(texts).union(*hard.values()))
        text_encoder = get_text_encoder(model.text_encoder_name)
        known = text_encoder.load_cache(cache) if cache is not None else 0
        self.table = model.text_inputs(self.texts)
        if cache is not None and text_encoder.cache_size > known:
            text_encoder.save_cache(cache)
        index = {c: i for i, c in enumerate(self.texts)}
        self.caption_ids = [[index[c] for c in caps] for caps in captions]
        self.hard_ids = {index[c]: [index[h] for h in hs] for c, hs in hard.items()}
        self.n = len(train)

    def batch(self, rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray, Tensor, Tensor | None]:
        """(features [B, T, D], lengths [B], caption ids [B], counterfactual ids [B] or -1): random motions, and
        with mirroring every motion next to its mirror (the hardest negative for a caption naming a side)."""
        mirrored = len(self.features) == 2
        picks = rng.choice(self.n, min(size // 2 if mirrored else size, self.n), replace=False)
        items = [(0, i) for i in picks] + ([(1, i) for i in picks] if mirrored else [])
        choice = rng.integers(0, 1 << 30, size=len(picks))
        ids = [self.caption_ids[side * self.n + i][choice[k % len(picks)] % len(self.caption_ids[i])]
               for k, (side, i) in enumerate(items)]
        features = np.stack([self.features[side][i] for side, i in items])
        lengths = np.array([self.lengths[i] for _, i in items])
        hard = None
        if self.hard_ids:
            options = [self.hard_ids.get(c, []) for c in ids]
            hard = torch.as_tensor([o[rng.integers(len(o))] if o else -1 for o in options])
        return features, lengths, torch.as_tensor(ids), hard


def fit_reward(train: MotionDataset, val: MotionDataset | None, rcfg: RewardConfig,
               log: MetricsWriter | None = None, progress: bool = True,
               text_cache: Path | None = None) -> tuple[TMRReward, dict[str, float]]:
    """Train a TMRReward on `train` (statistics included) and return it in eval mode with its last metrics.
    `text_cache`: a sentence-embedding cache file shared by trainings on the same captions."""
    torch.manual_seed(rcfg.seed)
    rng = np.random.default_rng(rcfg.seed)
    mean, std = feature_statistics(train.features, train.lengths)
    model = TMRReward(mean, std, rcfg.latent_dim, rcfg.num_layers, rcfg.num_heads, dropout=rcfg.dropout,
                      frames_per_token=rcfg.frames_per_token, trajectory=rcfg.trajectory,
                      text_layers=rcfg.text_layers)
    pairs = TrainingPairs(train, rcfg, model, text_cache)

    opt = torch.optim.AdamW(model.parameters(), lr=rcfg.lr, weight_decay=0.01)
    warmup = max(1, min(100, rcfg.steps // 10))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: warmup_cosine(s, rcfg.steps, warmup, overlap=True))
    metrics: dict[str, float] = {}
    model.train()
    columns = (TextColumn("reward"), BarColumn(), TextColumn("{task.completed}/{task.total} loss {task.fields[loss]}"),
               TimeRemainingColumn())
    with Progress(*columns, disable=not progress) as bar:
        task = bar.add_task("train", total=rcfg.steps, loss="-")
        for step in range(1, rcfg.steps + 1):
            features, lengths, ids, hard = pairs.batch(rng, rcfg.batch_size)
            text = pairs.table.take(ids)
            if rcfg.length_augment > 0:
                features, lengths = pad_lengths(features, lengths, rcfg.length_augment, rng)
            z_m = model.encode_motion(features, lengths)
            z_t = model.encode_inputs(text)
            z_hard = None if hard is None else model.encode_inputs(pairs.table.take(hard.clamp_min(0)))
            z_broken = None
            if rcfg.corruption_negatives:
                kinds = rng.choice(CORRUPTIONS, len(lengths))
                z_broken = model.encode_motion(np.stack([corrupt(f, n, k, rng) for f, n, k in
                                                         zip(features, lengths, kinds, strict=True)]), lengths)
            loss = contrastive_loss(z_t, z_m, ids[:, None] == ids[None, :], rcfg.temperature, text.sentences,
                                    rcfg.negative_filter, z_hard, None if hard is None else hard >= 0, z_broken)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            sched.step()
            metrics = {"loss/infonce": loss.item(), "lr": sched.get_last_lr()[0]}
            if val is not None and (step % rcfg.eval_every == 0 or step == rcfg.steps):
                metrics.update(retrieval_metrics(model, val))
            if log is not None and (step % 50 == 0 or step == rcfg.steps or "retrieval/all_R@1" in metrics):
                log.log(step, **metrics)
            bar.update(task, advance=1, loss=f"{loss.item():.3f}")
    return model.eval(), metrics


def train_reward(cfg: Config, out_path: str | Path | None = None, progress: bool = True) -> Path:
    """Train the reward model on `cfg.data`'s train split; write `{workdir}/reward/reward.pt` (or `out_path`)
    and its metrics JSONL beside it. Returns the checkpoint path."""
    out = Path(out_path) if out_path is not None else Path(cfg.workdir) / "reward" / "reward.pt"
    cache = Path(cfg.workdir) / "cache" / f"reward_text_{cfg.model.text_encoder}.pt"
    return fit_and_save(cfg, out, KIND, lambda train, val, log: fit_reward(train, val, cfg.reward, log, progress,
                                                                           cache))
