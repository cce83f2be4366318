"""`RolloutPool`: the driver's rollout actors. It starts them, watches them, replaces the ones that die or hang,
and with `cluster.autoscale` grows and shrinks with the cluster.

Size. Without autoscaling the pool holds `cluster.num_rollout_workers` actors from the start (`check_resources`
has made sure they fit). With `cluster.autoscale` the driver first asks the autoscaler for room for all of them
(`cluster.request_rollout_resources`), and the pool holds as many as the alive nodes can host now
(`cluster.rollout_capacity`): it starts more as nodes arrive, and when a node goes away its actors die with it
and are not replaced (counted as `worker_node_lost`, not as failures). The learners never wait for the pool to
be complete: they train on whatever the queue holds, so the schedule (sync interval, staleness, back-pressure)
is the same with 1 or 64 rollout actors, only the learner's idle fraction changes.

Faults. A worker whose `run()` ended with an error died (its node, an OOM, `ray.kill`) or failed (an exception
in sampling); a worker stuck in one batch for longer than `faults.sync_timeout_s` never picks up new weights.
Each is killed, its in-flight tickets go back to the replay queue for re-issue, and a new actor takes its place;
after `faults.max_worker_replacements` the pool gives up and the run fails with the cause.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import ray
from ray.exceptions import RayActorError, RayTaskError

from sopo_ray.config import Config
from sopo_ray.distributed import cluster


def error_cause(exc: BaseException) -> str:
    """The telling line of a Ray error (the innermost `...Error: ...` line, else the first), for one-line messages."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    errors = [line for line in lines if "Error" in line.split(":")[0]]
    return (errors[-1] if errors else lines[0] if lines else type(exc).__name__)[:200]


class RolloutPool:
    """Named rollout actors (`rollout-0`, `rollout-1`, ...) and their `run()` futures."""

    def __init__(self, cfg: Config, use_gpu: bool, worker_cls: type, worker_args: tuple[Any, ...], queue: Any) -> None:
        self.cfg, self.use_gpu, self.queue = cfg, use_gpu, queue
        self.worker_cls, self.worker_args = worker_cls, worker_args
        self.workers: dict[str, tuple[Any, Any]] = {}
        self.seq = 0
        self.size_target = 0   # target() as of the last resize: what the pool is aiming for
        self.faults: Counter[str] = Counter({"worker_replaced": 0, "worker_sync_timeout": 0, "worker_node_lost": 0})
        self.failure = ""

    # ------------------------------------------------------------------------------------------------
    # Size
    # ------------------------------------------------------------------------------------------------

    def target(self) -> int:
        """How many actors the pool should hold now (all of them, or with autoscaling what the alive nodes host)."""
        cc = self.cfg.cluster
        if not cc.autoscale:
            return cc.num_rollout_workers
        capacity = cluster.rollout_capacity(cc, self.use_gpu, num_learners=cc.num_learners)
        return min(cc.num_rollout_workers, capacity)

    def request_autoscaling(self) -> list[dict[str, float]]:
        """Ask the autoscaler for the whole pool plus the learners (a no-op without `cluster.autoscale`)."""
        cc = self.cfg.cluster
        return cluster.request_rollout_resources(cc.num_rollout_workers, cc, num_learners=cc.num_learners,
                                                 use_gpu=self.use_gpu)

    def resize(self, serving: set[str]) -> list[str]:
        """Start actors up to `target()`; beyond it, drop actors that have not started serving (still waiting for a
        node). `serving`: names the replay queue has heard from. Returns what changed, one line each."""
        target = self.size_target = self.target()
        changes = []
        for name in [n for n in self.workers if n not in serving]:
            if len(self.workers) <= target:
                break
            self._remove(name)
            changes.append(f"pool shrinks to {len(self.workers)}: {name} never found a node")
        while len(self.workers) < target:
            changes.append(f"pool grows to {len(self.workers) + 1}/{self.cfg.cluster.num_rollout_workers}: "
                           f"{self.spawn()} started")
        return changes

    def spawn(self) -> str:
        """Start one rollout actor serving tickets; returns its name."""
        name = f"rollout-{self.seq}"
        self.seq += 1
        options = cluster.actor_options(self.cfg.cluster, "rollout", self.use_gpu)
        actor = ray.remote(self.worker_cls).options(**options).remote(name, self.cfg, *self.worker_args)
        self.workers[name] = (actor, actor.run.remote())
        return name

    # ------------------------------------------------------------------------------------------------
    # Faults
    # ------------------------------------------------------------------------------------------------

    def check(self, queue_stats: dict[str, Any]) -> list[str]:
        """Replace (or, when their node left an autoscaling cluster, drop) dead, failed and hung actors.

        `queue_stats`: the replay queue's `stats()` (per-worker state and since when). Returns one line per change;
        sets `failure` once more than `faults.max_worker_replacements` were replaced.
        """
        changes = []
        futures = [f for _, f in self.workers.values()]
        ready, _ = ray.wait(futures, num_returns=len(futures), timeout=0)
        for name, (_, future) in list(self.workers.items()):
            if future in ready:
                try:
                    ray.get(future)
                except RayActorError as exc:
                    changes.append(self._replace(name, f"died ({error_cause(exc)})", may_shrink=True))
                except RayTaskError as exc:
                    changes.append(self._replace(name, f"failed ({error_cause(exc.cause)})"))
        timeout = self.cfg.faults.sync_timeout_s
        for name, info in queue_stats["workers"].items():
            stuck = info["state"] == "generating" and queue_stats["now"] - info["since"] > timeout
            if name in self.workers and stuck:
                self.faults["worker_sync_timeout"] += 1
                changes.append(self._replace(name, f"did not pick up new weights within {timeout:g} s "
                                                   "(stuck in one batch)"))
        return [c for c in changes if c]

    def _replace(self, name: str, why: str, may_shrink: bool = False) -> str:
        reissued = self._remove(name)
        if may_shrink and self.cfg.cluster.autoscale and len(self.workers) >= self.target():
            self.faults["worker_node_lost"] += 1
            return f"rollout worker {name} {why}; its node left, the pool shrinks to {len(self.workers)}"
        self.faults["worker_replaced"] += 1
        if self.faults["worker_replaced"] > self.cfg.faults.max_worker_replacements:
            self.failure = (f"rollout worker {name} {why}, and {self.faults['worker_replaced'] - 1} were replaced "
                            "before it; fix the cause above or raise faults.max_worker_replacements")
            return ""
        return f"rollout worker {name} {why}; replaced by {self.spawn()}, re-issued tickets {reissued}"

    def _remove(self, name: str) -> list[int]:
        """Kill `name` and give its in-flight tickets back to the queue; returns their ids."""
        actor, _ = self.workers.pop(name)
        ray.kill(actor, no_restart=True)
        return ray.get(self.queue.release_worker.remote(name))

    def shutdown(self, timeout_s: float) -> None:
        """Let the actors return their last stats (the queue is closed) for up to `timeout_s`, then kill them."""
        futures = [f for _, f in self.workers.values()]
        ray.wait(futures, num_returns=len(futures), timeout=timeout_s)
        for actor, _ in self.workers.values():
            ray.kill(actor)
        self.workers.clear()
