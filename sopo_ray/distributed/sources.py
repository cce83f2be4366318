"""Where a learner step's pairs come from, per objective, and how they become tensors.

- `QueueSource` (sopo, online_dpo): groups from the replay queue, filtered for staleness by the queue.
- `FixedPairSource` (offline_dpo): a pair set sampled once from the reference model, never refreshed.
- `CaptionSource` (sft): captions of the train split; no rollouts at all.
Each returns the rank's share of the step's `batch_size` items, deterministically where the run is; `collate`
turns them into a `PreferenceBatch` with x^w and x^l chosen by `objectives.pair_sources(name)`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import ray
import torch
from torch import Tensor

from sopo_ray.distributed.group import CaptionRef, RolloutGroup
from sopo_ray.distributed.seeds import caption_order
from sopo_ray.objectives import pair_sources


@dataclass
class PreferenceBatch:
    """One rank's training batch; tensors on CPU, motions padded to the dataset's max frames."""

    captions: list[str]
    x_w: Tensor
    """[B, T, D] un-normalised preferred motions."""
    len_w: Tensor
    """[B] frames of x^w."""
    x_l: Tensor | None
    """[B, T, D] un-normalised unpreferred motions (None for SFT)."""
    len_l: Tensor | None
    """[B] frames of x^l."""
    reward_l: Tensor | None
    """[B] r(x^l, c)."""
    sims_w: Tensor | None
    """[B, K] similarity of x^w to each online sample (beta_w)."""
    staleness: list[int]
    """Per pair: learner version minus the version that sampled x^l (empty without rollouts)."""
    reward_mean: float = float("nan")
    """Mean reward of all K samples of the batch's groups."""
    reward_best: float = float("nan")
    """Mean reward of the best sample of each group."""


def _pad(arrays: list[np.ndarray], t_max: int) -> Tensor:
    out = np.zeros((len(arrays), t_max, arrays[0].shape[-1]), dtype=np.float32)
    for i, a in enumerate(arrays):
        out[i, : a.shape[0]] = a
    return torch.from_numpy(out)


def collate(objective: str, items: list[RolloutGroup] | list[CaptionRef], features: np.ndarray,
            lengths: np.ndarray, staleness: list[int] | None = None) -> PreferenceBatch:
    """A PreferenceBatch for `objective` from groups (or caption refs for SFT) and the split they index."""
    preferred, unpreferred = pair_sources(objective)
    t_max = features.shape[1]
    if preferred == "dataset":
        idx = np.array([it.motion_index for it in items], dtype=np.int64)
        x_w = torch.from_numpy(np.array(features[idx], dtype=np.float32))
        len_w = torch.from_numpy(np.asarray(lengths)[idx].astype(np.int64))
    else:
        x_w = _pad([g.x_best for g in items], t_max)
        len_w = torch.tensor([g.length for g in items], dtype=torch.long)
    captions = [it.caption if isinstance(it, RolloutGroup) else it.text for it in items]
    if unpreferred is None:
        return PreferenceBatch(captions, x_w, len_w, None, None, None, None, [])
    groups: list[RolloutGroup] = items  # type: ignore[assignment]
    rewards = np.stack([g.rewards for g in groups])
    return PreferenceBatch(
        captions, x_w, len_w, x_l=_pad([g.x_l for g in groups], t_max),
        len_l=torch.tensor([g.length for g in groups], dtype=torch.long),
        reward_l=torch.tensor([g.reward_l for g in groups], dtype=torch.float32),
        sims_w=torch.from_numpy(np.stack([g.sims_w for g in groups]).astype(np.float32)),
        staleness=list(staleness or []), reward_mean=float(rewards.mean()),
        reward_best=float(rewards.max(axis=1).mean()))


def rank_slice(step: int, batch_size: int, rank: int, world: int) -> tuple[int, int]:
    """Stream positions [start, start + n) of `rank`'s share of step `step`."""
    n = batch_size // world
    return step * batch_size + rank * n, n


class QueueSource:
    """Groups from the replay queue for (step, version); returns None once the queue is closed."""

    def __init__(self, queue: Any, batch_size: int, world: int, poll_s: float = 5.0) -> None:
        self.queue, self.n, self.poll_s = queue, batch_size // world, poll_s

    def next(self, step: int, version: int) -> tuple[list[RolloutGroup], list[int], dict[str, int]] | None:
        """(groups, staleness per group, drops seen while waiting), waiting as long as the queue stays open."""
        dropped: dict[str, int] = {}
        while True:
            reply = ray.get(self.queue.get_batch.remote(step, version, self.n, self.poll_s))
            for k, v in reply.dropped.items():
                dropped[k] = dropped.get(k, 0) + v
            if reply.status == "closed":
                return None
            if reply.status == "ok":
                groups = ray.get(reply.groups)
                return groups, [version - v for v in reply.versions], dropped


class FixedPairSource:
    """offline_dpo: the fixed pairs, visited in a seeded order per epoch (the same order on resume)."""

    def __init__(self, pairs: list[RolloutGroup], seed: int, batch_size: int, rank: int, world: int) -> None:
        self.pairs, self.seed, self.batch_size, self.rank, self.world = pairs, seed, batch_size, rank, world

    def next(self, step: int, version: int) -> tuple[list[RolloutGroup], list[int], dict[str, int]]:
        start, n = rank_slice(step, self.batch_size, self.rank, self.world)
        m = len(self.pairs)
        picks = [int(caption_order(self.seed + 1, m, p // m)[p % m]) for p in range(start, start + n)]
        return [self.pairs[i] for i in picks], [], {}


class CaptionSource:
    """sft: the train captions in the run's caption-stream order."""

    def __init__(self, table: list[CaptionRef], seed: int, batch_size: int, rank: int, world: int) -> None:
        self.table, self.seed, self.batch_size, self.rank, self.world = table, seed, batch_size, rank, world

    def next(self, step: int, version: int) -> tuple[list[CaptionRef], list[int], dict[str, int]]:
        start, n = rank_slice(step, self.batch_size, self.rank, self.world)
        m = len(self.table)
        return [self.table[int(caption_order(self.seed, m, p // m)[p % m])] for p in range(start, start + n)], [], {}


def timed(stages: dict[str, float], name: str, t0: float) -> float:
    """Add the seconds since `t0` to `stages[name]`; returns now (the next stage's t0)."""
    now = time.perf_counter()
    stages[name] = stages.get(name, 0.0) + now - t0
    return now
