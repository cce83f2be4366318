"""`PipelineWatch`: the driver's eye on the running pipeline (objectives with rollouts), every `PIPELINE_EVERY_S`.

Each `tick`: the replay queue's stats and the rollout workers' reports become a `pipeline` record; a queue actor
that crashed and restarted (empty, `restoring`) gets the state it had at the previous tick back, its groups
counted as dropped ('queue_restart'); dead, failed or hung rollout workers are replaced (`RolloutPool.check`), and
with cluster.autoscale the pool follows the cluster; a failure that must end the run (too many replacements, the
queue closed itself on NaN rewards) stops the learners and is kept in `failure`.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import ray
from ray.exceptions import GetTimeoutError, RayActorError

from sopo_ray.config import Config
from sopo_ray.distributed.monitor import pipeline_record
from sopo_ray.distributed.pool import RolloutPool
from sopo_ray.distributed.ticket_board import BoardState


def request_stop(control: Any, queue: Any, reason: str) -> None:
    """Ask the learners to stop after their current step and close the replay queue (when there is one)."""
    ray.get(control.request_stop.remote(reason))
    if queue is not None:
        ray.get(queue.close.remote(reason))


class PipelineWatch:
    """Health records, queue recovery and fault triage of one run's rollout pipeline."""

    def __init__(self, cfg: Config, queue: Any, control: Any, pool: RolloutPool) -> None:
        self.cfg, self.queue, self.control, self.pool = cfg, queue, control, pool
        self.mirror: BoardState | None = None
        """The replay queue's state at the last tick (to restore a queue that restarted)."""
        self.faults: Counter[str] = Counter({"queue_restart": 0})
        self.failure = ""
        """Why the run must fail ('' while it may go on)."""

    def fault_counts(self) -> dict[str, int]:
        """Fault counters of the pool and of the queue, as `health/<name>`."""
        return {**self.pool.faults, **self.faults}

    def tick(self) -> tuple[dict[str, Any] | None, list[str]]:
        """One look: (the pipeline record to log, with the learner's step and version, or None when the queue did
        not answer or was just restored; one line per change made)."""
        try:
            stats = ray.get(self.queue.stats.remote(), timeout=30)
        except (RayActorError, GetTimeoutError):
            return None, []
        if stats["restoring"] and self.mirror is not None:
            ray.get(self.queue.restore.remote(self.mirror, None, "queue_restart"))
            self.faults["queue_restart"] += 1
            return None, ["replay queue restarted: its groups are counted as dropped (queue_restart)"]
        if not stats["restoring"]:
            self.mirror = ray.get(self.queue.snapshot.remote(False)).state
        self._note_queue_failure(stats)
        rollout = ray.get(self.control.rollout.remote())
        record = {"step": stats["learner_step"], "version": stats["learner_version"],
                  **pipeline_record(stats, rollout, self.fault_counts()), "rollout/pool_target": self.pool.size_target}
        changes = self.pool.check(stats)
        if self.pool.failure and not self.failure:
            self.failure = self.pool.failure
            request_stop(self.control, self.queue, "too many rollout worker failures")
            return record, []
        if self.cfg.cluster.autoscale:
            changes += self.pool.resize(set(rollout["workers"]))
        return record, changes

    def finish(self, grace_s: float) -> dict[str, Any]:
        """Close the queue, give the workers `grace_s` to return their last stats, and the final pipeline record."""
        ray.get(self.queue.close.remote("done"))
        self.pool.shutdown(grace_s)
        stats = ray.get(self.queue.stats.remote())
        self._note_queue_failure(stats)
        return {"step": stats["learner_step"], "version": stats["learner_version"],
                **pipeline_record(stats, ray.get(self.control.rollout.remote()), self.fault_counts())}

    def _note_queue_failure(self, stats: dict[str, Any]) -> None:
        """The queue closed itself (NaN/inf rewards in a row): the learners stop, and the run fails with its message."""
        if stats.get("failure") and not self.failure:
            self.failure = stats["failure"]
            request_stop(self.control, self.queue, "replay queue failure")
