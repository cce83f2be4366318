"""Where a learner step's items come from, one source per `Objective.source` (objectives/registry.py):

- `QueueSource` ("queue": sopo, online_dpo): groups from the replay queue, filtered for staleness by the queue.
- `FixedPairSource` ("fixed_pairs": offline_dpo): a pair set sampled once from the reference model, never refreshed.
- `CaptionSource` ("captions": sft): captions of the train split; no rollouts at all.
Each returns the rank's share of the step's `batch_size` items as `StepItems`, deterministically where the run is;
`algorithm.preference_batch` turns them into tensors.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import ray

from sopo_ray.distributed.group import CaptionRef, RolloutGroup
from sopo_ray.distributed.replay_queue import Status
from sopo_ray.distributed.seeds import stream_captions


@dataclass
class StepItems:
    """One learner rank's share of one step."""

    items: list[RolloutGroup] | list[CaptionRef]
    staleness: list[int] = field(default_factory=list)
    """Per group: learner version minus the version that sampled it (empty without rollouts)."""
    dropped: dict[str, int] = field(default_factory=dict)
    """Groups the queue dropped while this rank waited, by reason."""


def rank_slice(step: int, batch_size: int, rank: int, world: int) -> tuple[int, int]:
    """Stream positions [start, start + n) of `rank`'s share of step `step`."""
    n = batch_size // world
    return step * batch_size + rank * n, n


class QueueSource:
    """Groups from the replay queue for (step, version); None once the queue is closed."""

    def __init__(self, queue: Any, batch_size: int, world: int, poll_s: float = 5.0) -> None:
        self.queue, self.n, self.poll_s = queue, batch_size // world, poll_s

    def next(self, step: int, version: int) -> StepItems | None:
        """This rank's groups, waiting as long as the queue stays open."""
        dropped: dict[str, int] = {}
        while True:
            reply = ray.get(self.queue.get_batch.remote(step, version, self.n, self.poll_s))
            for k, v in reply.dropped.items():
                dropped[k] = dropped.get(k, 0) + v
            if reply.status is Status.CLOSED:
                return None
            if reply.status is Status.OK:
                return StepItems(ray.get(reply.refs), [version - v for v in reply.versions], dropped)


class FixedPairSource:
    """offline_dpo: the fixed pairs, visited in a seeded order per epoch (the same order on resume)."""

    def __init__(self, pairs: list[RolloutGroup], seed: int, batch_size: int, rank: int, world: int) -> None:
        self.pairs, self.seed, self.batch_size, self.rank, self.world = pairs, seed, batch_size, rank, world

    def next(self, step: int, version: int) -> StepItems:
        start, n = rank_slice(step, self.batch_size, self.rank, self.world)
        return StepItems([self.pairs[i] for i in stream_captions(self.seed + 1, len(self.pairs), start, n)])


class CaptionSource:
    """sft: the train captions in the run's caption-stream order."""

    def __init__(self, table: list[CaptionRef], seed: int, batch_size: int, rank: int, world: int) -> None:
        self.table, self.seed, self.batch_size, self.rank, self.world = table, seed, batch_size, rank, world

    def next(self, step: int, version: int) -> StepItems:
        start, n = rank_slice(step, self.batch_size, self.rank, self.world)
        return StepItems([self.table[i] for i in stream_captions(self.seed, len(self.table), start, n)])
