"""`RolloutPool`: the driver's rollout actors. It starts them, watches them, replaces the ones that die or hang,
and with `cluster.autoscale` grows and shrinks with the cluster.

Size. Without autoscaling the pool holds `cluster.num_rollout_workers` actors from the start (`check_resources`
has made sure they fit). With `cluster.autoscale` the driver first asks the autoscaler for room for all of them
(`placement.request_rollout_resources`), and the pool holds as many as the alive nodes can host now
(`placement.rollout_capacity`): it starts more as nodes arrive, and when a node goes away its actors die with it
and are not replaced (counted as `worker_node_lost`, not as failures). The learners never wait for the pool to
be complete: they train on whatever the queue holds, so the schedule (sync interval, staleness, back-pressure)
is the same with 1 or 64 rollout actors, only the learner's idle fraction changes.

Faults. A worker whose `run()` ended with an error died (its node, an OOM, `ray.kill`) or failed (an exception
in sampling); a worker stuck in one batch for longer than `faults.sync_timeout_s` never picks up new weights.
Each is killed, its in-flight tickets go back to the replay queue for re-issue, and a new actor takes its place;
after `faults.max_worker_replacements` the pool gives up and the run fails with the cause.

offline_dpo has no pool: `fixed_pairs` samples its pairs once with temporary actors before training.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ray
from ray.exceptions import RayActorError, RayTaskError
from rich.console import Console

from sopo_ray.checkpoint import load_checkpoint, save_checkpoint
from sopo_ray.config import Config, config_to_dict
from sopo_ray.distributed import placement
from sopo_ray.distributed.group import RolloutGroup


def error_cause(exc: BaseException) -> str:
    """The telling line of a Ray error (the innermost `...Error: ...` line, else the first), for one-line messages."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    errors = [line for line in lines if "Error" in line.split(":")[0]]
    return (errors[-1] if errors else lines[0] if lines else type(exc).__name__)[:200]


@dataclass
class WorkerArgs:
    """What every rollout actor is built from (object refs are passed as top-level arguments, so each actor
    receives the payloads themselves)."""

    base: Any
    """Object ref of the base model's checkpoint payload (version 0 of the policy)."""
    reward: Any
    """Object ref of the reward model's payload."""
    train: Any
    """Object ref of the train split."""
    store: Any
    """The WeightStore."""
    control: Any
    """The RunControl."""
    keep_best: bool
    """Whether groups keep their best sample (`Objective.keeps_best`)."""


class RolloutPool:
    """Named rollout actors (`rollout-0`, `rollout-1`, ...) and their `run()` futures."""

    def __init__(self, cfg: Config, use_gpu: bool, worker_cls: type, args: WorkerArgs, queue: Any) -> None:
        self.cfg, self.use_gpu, self.queue, self.args = cfg, use_gpu, queue, args
        self.worker_cls = worker_cls
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
        capacity = placement.rollout_capacity(cc, self.use_gpu, num_learners=cc.num_learners)
        return min(cc.num_rollout_workers, capacity)

    def request_autoscaling(self) -> list[dict[str, float]]:
        """Ask the autoscaler for the whole pool plus the learners (a no-op without `cluster.autoscale`)."""
        cc = self.cfg.cluster
        return placement.request_rollout_resources(cc.num_rollout_workers, cc, num_learners=cc.num_learners,
                                                 use_gpu=self.use_gpu)

    def resize(self, serving: set[str]) -> list[str]:
        """Start actors up to `target()`; beyond it, drop actors that have not started serving (still waiting for a
        node). `serving`: names of the workers that reported to the RunControl. Returns what changed, one line
        each."""
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

    def actor(self, name: str, queue: Any = None) -> Any:
        """A new rollout actor `name` (placed by `cluster.rollout_*`), serving `queue` once it runs."""
        a = self.args
        options = placement.actor_options(self.cfg.cluster, "rollout", self.use_gpu)
        return ray.remote(self.worker_cls).options(**options).remote(
            name, self.cfg, a.base, a.reward, a.train, queue, a.store, a.control, a.keep_best, self.use_gpu)

    def spawn(self) -> str:
        """Start one rollout actor serving tickets; returns its name."""
        name = f"rollout-{self.seq}"
        self.seq += 1
        actor = self.actor(name, self.queue)
        self.workers[name] = (actor, actor.run.remote())
        return name

    def fixed_pairs(self, path: Path, caption_indices: list[int], data_id: str, console: Console) -> list[RolloutGroup]:
        """offline_dpo's pairs: the best and worst of K reference samples of each caption, sampled ONCE (into
        `path`, read back from there on resume) and never refreshed."""
        if path.is_file():
            groups = [RolloutGroup.from_state(g) for g in load_checkpoint(path, "offline_pairs")["state"]["groups"]]
            console.print(f"offline pairs: {len(groups)} from {path}")
            return groups
        console.print(f"sampling {len(caption_indices)} offline pairs from the reference model "
                      f"({self.cfg.cluster.num_rollout_workers} workers)")
        groups = self.sample_once(caption_indices)
        save_checkpoint(path, "offline_pairs", {"groups": [g.to_state() for g in groups]}, config_to_dict(self.cfg),
                        data_id)
        return groups

    def sample_once(self, caption_indices: list[int]) -> list[RolloutGroup]:
        """Groups of `caption_indices` sampled by version 0 (the reference) with `cluster.num_rollout_workers`
        temporary actors, `schedule.rollout_batch_size` captions per call."""
        n, chunk = len(caption_indices), self.cfg.schedule.rollout_batch_size
        workers = [self.actor(f"pairs-{i}") for i in range(self.cfg.cluster.num_rollout_workers)]
        futures = [workers[i % len(workers)].generate.remote(caption_indices[s:s + chunk], 0,
                                                             list(range(s, min(s + chunk, n))))
                   for i, s in enumerate(range(0, n, chunk))]
        groups = [g for batch in ray.get(futures) for g in batch]
        for w in workers:
            ray.kill(w)
        return groups

    # ------------------------------------------------------------------------------------------------
    # Faults
    # ------------------------------------------------------------------------------------------------

    def check(self, queue_stats: dict[str, Any]) -> list[str]:
        """Replace (or, when their node left an autoscaling cluster, drop) dead, failed and hung actors.

        `queue_stats`: the replay queue's `stats()` (since when each worker holds its ticket, `claimed_at`, and the
        queue's `now`). Returns one line per change; sets `failure` once more than `faults.max_worker_replacements`
        were replaced.
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
        for name, claimed_at in queue_stats["claimed_at"].items():
            if name in self.workers and queue_stats["now"] - claimed_at > timeout:
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
        self.args.control.forget_worker.remote(name)
        return ray.get(self.queue.release_worker.remote(name))

    def shutdown(self, timeout_s: float) -> None:
        """Let the actors return their last stats (the queue is closed) for up to `timeout_s`, then kill them."""
        futures = [f for _, f in self.workers.values()]
        ray.wait(futures, num_returns=len(futures), timeout=timeout_s)
        for actor, _ in self.workers.values():
            ray.kill(actor)
        self.workers.clear()
