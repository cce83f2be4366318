"""Where a learner step's items come from, one source per `Objective.source` (objectives/registry.py):

- `QueueSource` ("queue": sopo, online_dpo): groups from the replay queue, filtered for staleness by the queue;
  it can take the next step's groups in the background while the learner computes (`prefetch`).
- `FixedPairSource` ("fixed_pairs": offline_dpo): a pair set sampled once from the reference model, never refreshed.
- `CaptionSource` ("captions": sft): captions of the train split; no rollouts at all.
Each returns the rank's share of the step's `batch_size` items as `StepItems`, deterministically where the run is;
`algorithm.preference_batch` turns them into tensors.
"""

from __future__ import annotations

import threading
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import ray

from sopo_ray.distributed.group import CaptionRef, RolloutGroup
from sopo_ray.distributed.replay_queue import Status
from sopo_ray.distributed.seeds import stream_captions
from sopo_ray.errors import ClusterError


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
    """Groups from the replay queue for (step, version); None once the queue is closed.

    `prefetch(step, version)` starts the same request in a background thread, so its round trips (the queue's
    `get_batch`, then fetching the groups) overlap the current step; `next` for that step returns its result. The
    queue filters and counts the groups for `version`, the version the step trains with (versions follow steps,
    `SchedulePlan.version_at`), exactly as for a request made at the step itself; `next` checks at use that the
    version asked for is still the one the groups were filtered for.
    """

    def __init__(self, queue: Any, batch_size: int, world: int, poll_s: float = 5.0) -> None:
        self.queue, self.n, self.poll_s = queue, batch_size // world, poll_s
        self._ahead: tuple[int, int, Future[StepItems | None]] | None = None
        self._pool: ThreadPoolExecutor | None = None
        self._closing = threading.Event()

    def next(self, step: int, version: int) -> StepItems | None:
        """This rank's groups, waiting as long as the queue stays open (the prefetched ones, if for this step)."""
        if self._ahead is None or self._ahead[0] != step:
            return self._take(step, version)
        _, filtered_for, future = self._ahead
        self._ahead = None
        if filtered_for != version:
            raise ClusterError(f"learner: groups prefetched for step {step} were filtered for version {filtered_for}, "
                               f"but the step trains with version {version}; run with "
                               "schedule.prefetch_batches=false and report this")
        return None if future.cancelled() else future.result()     # cancelled: closed before it started

    def prefetch(self, step: int, version: int) -> None:
        """Start taking the groups of (step, version) in the background (nothing if a prefetch is pending)."""
        if self._ahead is not None:
            return
        self._pool = self._pool or ThreadPoolExecutor(1, thread_name_prefix="prefetch")
        self._ahead = (step, version, self._pool.submit(self._take, step, version))

    def holds(self) -> bool:
        """True while a prefetched request is pending or unused: its groups are taken from the queue."""
        return self._ahead is not None

    def close(self) -> None:
        """Stop a pending prefetch (within one poll) and the background thread."""
        self._closing.set()
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)

    def _take(self, step: int, version: int) -> StepItems | None:
        dropped: dict[str, int] = {}
        while not self._closing.is_set():
            reply = ray.get(self.queue.get_batch.remote(step, version, self.n, self.poll_s))
            for k, v in reply.dropped.items():
                dropped[k] = dropped.get(k, 0) + v
            if reply.status is Status.CLOSED:
                return None
            if reply.status is Status.OK:
                return StepItems(reply.groups.fetch(), [version - v for v in reply.versions], dropped)
        return None


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
