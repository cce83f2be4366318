"""Shared pieces of the Ray benches (not a bench itself).

- `local_ray`: a throwaway single-node Ray. `simulated_cluster`: a multi-node Ray cluster on this machine
  (`ray.cluster_utils.Cluster`), one raylet and object store per node, so placement by custom resource and
  cross-node object transfers are real (over localhost).
- `ReplayFeeder`: a rollout stand-in that speaks the replay queue's ticket protocol exactly like
  `RolloutWorker.run` (claim a ticket, put its groups, stop when the queue closes) but replays copies of groups it
  was given instead of sampling, so queue_transfer.py measures the queue's data path and learner_overhead.py the
  learner, without paying for rollouts.
"""

from __future__ import annotations

import dataclasses
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import ray

from sopo_ray.config import Config, with_overrides
from sopo_ray.distributed.cluster import OFFLINE_ENV
from sopo_ray.distributed.group import RolloutGroup

MiB = 2**20


def absolute_paths(cfg: Config) -> Config:
    """`cfg` with absolute workdir and data.root (actors and Train workers may start in another directory), as the
    driver does."""
    return with_overrides(cfg, [f"workdir={Path(cfg.workdir).resolve()}", f"data.root={Path(cfg.data.root).resolve()}"])


def _throwaway_env() -> None:
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")


def local_ray(num_cpus: int) -> None:
    """A fresh single-node Ray in this process (127.0.0.1, no dashboard, no token prompt), text encoder offline."""
    _throwaway_env()
    ray.init(address="local", num_cpus=num_cpus, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": dict(OFFLINE_ENV)})


def simulated_cluster(head_cpus: float, nodes: list[dict[str, Any]], store_mib: int = 400,
                      ) -> tuple[Any, dict[str, str]]:
    """Start a head (`head_cpus` CPUs) plus one node per `ray.cluster_utils.Cluster.add_node` kwargs in `nodes`,
    each with its own `store_mib` MiB object store, and connect this process.

    Returns the Cluster (call `.shutdown()` after `ray.shutdown()`) and node id -> 'head' / 'node-1', 'node-2', ...
    A throwaway cluster on 127.0.0.1: no dashboard, no token prompt, no usage stats (as the tests do).
    """
    from ray.cluster_utils import Cluster

    _throwaway_env()
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": head_cpus, "include_dashboard": False,
                                                            "object_store_memory": store_mib * MiB})
    names = {cluster.head_node.node_id: "head"}
    for i, kwargs in enumerate(nodes, start=1):
        names[cluster.add_node(object_store_memory=store_mib * MiB, **kwargs).node_id] = f"node-{i}"
    cluster.wait_for_nodes()
    ray.init(address=cluster.address, log_to_driver=False, runtime_env={"env_vars": dict(OFFLINE_ENV)})
    return cluster, names


def synthetic_groups(n: int, frames: int, k: int, dim: int = 263, seed: int = 0) -> list[RolloutGroup]:
    """`n` valid groups of the size a real rollout produces: x^l [frames, dim] float32 and K rewards/similarities."""
    rng = np.random.default_rng(seed)
    return [RolloutGroup(caption_id=f"m{i}#0", caption="a person walks forward and waves", motion_index=i,
                         length=frames, x_l=rng.standard_normal((frames, dim), dtype=np.float32),
                         rewards=rng.uniform(0, 1, k).astype(np.float32),
                         sims_w=rng.uniform(0, 1, k).astype(np.float32), loser=0, winner=k - 1, policy_version=0,
                         seeds=np.arange(k, dtype=np.int64), created_at=time.time()).validate()
            for i in range(n)]


def group_bytes(group: RolloutGroup) -> int:
    """Bytes of a group's arrays (what crosses the object store; strings and scalars are noise next to x^l)."""
    arrays = [group.x_l, group.rewards, group.sims_w, group.seeds] + ([group.x_best] if group.x_best is not None
                                                                      else [])
    return sum(a.nbytes for a in arrays)


class ReplayFeeder:
    """Claims tickets from `queue` and puts copies of `groups` (cycled) tagged with the ticket's positions."""

    def __init__(self, name: str, queue: Any, groups: list[RolloutGroup]) -> None:
        self.name, self.queue, self.groups = name, queue, groups
        self.node = ray.get_runtime_context().get_node_id()

    def node_id(self) -> str:
        """The Ray node this feeder runs on."""
        return self.node

    def run(self) -> dict[str, float]:
        """Serve tickets until the queue closes; returns groups put and seconds spent in `put` calls."""
        put, put_s = 0, 0.0
        while True:
            reply = ray.get(self.queue.claim.remote(self.name, None, 1.0))
            if reply.status == "closed":
                return {"groups": put, "put_s": put_s}
            if reply.status == "wait":
                continue
            t = reply.ticket
            batch = [dataclasses.replace(self.groups[(t.start + i) % len(self.groups)], position=t.start + i,
                                         ticket=t.ticket_id, policy_version=t.version, worker=self.name,
                                         created_at=time.time()) for i in range(t.size)]
            t0 = time.perf_counter()
            ray.get(self.queue.put.remote(self.name, t.ticket_id, t.epoch, batch))
            put_s += time.perf_counter() - t0
            put += len(batch)
