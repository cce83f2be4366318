"""A learner that prefetches its next batch (`schedule.prefetch_batches`, `sources.QueueSource.prefetch`) gets what
it would have got asking at the step: the same groups, the same staleness, the same drops counted by the queue,
on a real ReplayQueue actor. Whole runs with prefetch on (the default) are tests/test_distributed_run.py's: the
deterministic run equals the local loop, and a run stopped and resumed twice equals an uninterrupted one."""

from __future__ import annotations

import threading

import pytest
import ray
from test_distributed_queue import deliver, new_queue

from sopo_ray.distributed.replay_queue import Status
from sopo_ray.distributed.sources import QueueSource, StepItems
from sopo_ray.errors import ClusterError

pytestmark = pytest.mark.ray
PLAN = dict(num_captions=40, sync_interval=1, max_staleness=1, capacity=16, total_steps=8)


def stale_then_fresh(prefetch: bool) -> tuple[StepItems, dict]:
    """8 groups sampled at version 0 wait in the queue; the learner takes step 2 at version 2 (they are 2 versions
    old, max_staleness 1: stale); fresh groups arrive only after it asked. Returns what it got and the queue's
    stats."""
    queue = new_queue(**PLAN)
    for _ in range(2):
        deliver(queue, "w0", ray.get(queue.claim.remote("w0")))
    assert ray.get(queue.claim.remote("w0", 0.2)).reason == "staleness"     # step 2 needs version 1
    source = QueueSource(queue, batch_size=4, world=1, poll_s=0.5)
    if prefetch:
        source.prefetch(2, 2)                    # no fresh group can come before the request moves the queue on
    done = threading.Event()

    def rollout_worker() -> None:                # serves tickets, groups tagged with the version each one needs
        while not done.is_set():
            reply = ray.get(queue.claim.remote("w0", 0.2))
            if reply.status is Status.OK:
                deliver(queue, "w0", reply)

    worker = threading.Thread(target=rollout_worker)
    worker.start()
    got = source.next(2, 2)
    done.set()
    worker.join()
    stats = ray.get(queue.stats.remote())
    ray.kill(queue)
    return got, stats


def test_a_prefetched_batch_is_filtered_and_counted_as_a_batch_taken_at_the_step(ray_cluster):
    plain, plain_stats = stale_then_fresh(prefetch=False)
    ahead, ahead_stats = stale_then_fresh(prefetch=True)
    for items, stats in ((plain, plain_stats), (ahead, ahead_stats)):
        assert len(items.items) == 4 and items.staleness == [1, 1, 1, 1]            # never older than max_staleness
        assert items.dropped == {"stale": 8}
        assert stats["dropped"]["stale"] == 8 and stats["accounting_ok"]
    assert [g.position for g in ahead.items] == [g.position for g in plain.items]
    for key in ("consumed", "dropped", "staleness_hist", "learner_step", "learner_version"):   # generated: timing
        assert ahead_stats[key] == plain_stats[key], key


def test_a_prefetch_serves_only_its_own_step_and_version(ray_cluster):
    queue = new_queue(**PLAN)
    for _ in range(2):
        deliver(queue, "w0", ray.get(queue.claim.remote("w0")))
    source = QueueSource(queue, batch_size=4, world=1, poll_s=0.5)
    source.prefetch(1, 0)
    source.prefetch(1, 0)                        # one pending at a time: a second call changes nothing
    first = source.next(0, 0)                    # the step before it (retried after a skipped update): asked now
    assert len(first.items) == 4 and source.holds()
    second = source.next(1, 0)                   # the prefetched one
    assert len(second.items) == 4 and not source.holds()
    assert sorted(g.position for g in first.items + second.items) == list(range(8))    # each group once
    source.prefetch(2, 0)
    with pytest.raises(ClusterError, match="filtered for version 0"):
        source.next(2, 1)
    source.close()
    ray.kill(queue)


def test_closing_ends_a_pending_prefetch(ray_cluster):
    queue = new_queue(**PLAN)
    source = QueueSource(queue, batch_size=4, world=1, poll_s=0.3)
    source.prefetch(0, 0)                        # nothing will ever arrive
    source.close()
    assert source.next(0, 0) is None             # within one poll
    ray.get(queue.close.remote("test"))
    assert ray.get(queue.get_batch.remote(0, 0, 4)).status is Status.CLOSED
    ray.kill(queue)
