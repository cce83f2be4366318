"""Where a learner step's pairs come from, per objective, and how they become tensors.

- `QueueSource` (sopo, online_dpo): groups from the replay queue, filtered for staleness by the queue.
- `FixedPairSource` (offline_dpo): a pair set sampled once from the reference model, never refreshed.
- `CaptionSource` (sft): captions of the train split; no rollouts at all.
Each returns the rank's share of the step's `batch_size` items, deterministically where the run is;
`algorithm.preference_batch` turns them into tensors with x^w and x^l chosen by `objectives.pair_sources(name)`.
"""

from __future__ import annotations

from typing import Any

import ray

from sopo_ray.distributed.group import CaptionRef, RolloutGroup
from sopo_ray.distributed.seeds import caption_order


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
