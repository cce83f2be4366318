"""Shared pieces of the benches (not a bench itself).

- `local_ray`: a throwaway single-node Ray. `simulated_cluster`: a multi-node Ray cluster on this machine
  (`ray.cluster_utils.Cluster`), one raylet and object store per node, so placement by custom resource and
  cross-node object transfers are real (over localhost).
- `fresh_payload`: a base-model payload with fresh weights, for benches that time what does not depend on them.
- `ReplayFeeder`: a rollout stand-in that runs the rollout workers' own ticket loop (`rollout.serve_tickets`:
  claim a ticket, put its groups, stop when the queue closes) but serves each ticket with copies of groups it was
  given instead of sampling, so queue_transfer.py measures the queue's data path and learner_overhead.py the
  learner, without paying for rollouts.
- `random_condition`: random text conditions of the shape the generator's text encoder gives, for benches that time
  the denoiser and not the encoder.
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections import Counter
from typing import Any

import numpy as np
import ray
import torch

from sopo_ray.config import Config, config_to_dict, with_overrides
from sopo_ray.distributed.cluster import OFFLINE_ENV
from sopo_ray.distributed.group import RolloutGroup
from sopo_ray.distributed.rollout import serve_tickets
from sopo_ray.distributed.ticket_board import Ticket
from sopo_ray.models.generator import build_generator

MiB = 2**20
TYPICAL_WORDS = 16
"""MiniLM tokens of a typical caption of the embedded data, [CLS] and [SEP] included (median 14, 90th percentile
24, longest 39)."""


def random_condition(cfg: Config, n: int, seed: int = 0) -> torch.Tensor:
    """`n` random text conditions of the shape `MotionGenerator.encode_text` gives for `cfg`: unit sentence vectors
    [n, E]; with `model.text_tokens`, [n, 1 + text_tokens, E] with the first `TYPICAL_WORDS` word rows filled."""
    from sopo_ray.models.text_encoder import text_encoder_dim

    g = torch.Generator().manual_seed(seed)
    width, words = text_encoder_dim(cfg.model.text_encoder), cfg.model.text_tokens
    sentence = torch.nn.functional.normalize(torch.randn(n, width, generator=g), dim=-1)
    if not words:
        return sentence
    text = torch.zeros(n, 1 + words, width)
    text[:, 0] = sentence
    text[:, 1: 1 + min(words, TYPICAL_WORDS)] = torch.randn(n, min(words, TYPICAL_WORDS), width, generator=g)
    return text


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


def fresh_payload(cfg: Config, mean: np.ndarray, std: np.ndarray) -> dict[str, Any]:
    """A checkpoint payload of a freshly initialised generator for `cfg` (as `artifacts.resolve` hands a run its
    trained base): for benches whose timings do not depend on the weights' values."""
    gen = build_generator(cfg, (mean, std))
    return {"config": config_to_dict(cfg), "kind": cfg.model.kind,
            "state": {k: v.detach().clone() for k, v in gen.state_dict().items()}}


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
        self.totals: Counter[str] = Counter()

    def node_id(self) -> str:
        """The Ray node this feeder runs on."""
        return self.node

    def serve(self, t: Ticket) -> list[RolloutGroup]:
        """Copies of the given groups, tagged with the ticket's positions and version."""
        self.totals["groups"] += t.size
        return [dataclasses.replace(self.groups[p % len(self.groups)], position=p, ticket=t.ticket_id,
                                    policy_version=t.version, worker=self.name, created_at=time.time())
                for p in t.positions]

    def run(self) -> dict[str, float]:
        """Serve tickets until the queue closes; returns groups put and seconds spent in `put` calls."""
        serve_tickets(self.name, self.queue, self.serve, self.totals)
        return {"groups": self.totals["groups"], "put_s": self.totals["put_s"]}


def pool_rate(cfg: Config, art: Any, n_groups: int, n_workers: int, worker_options: dict[str, Any],
              refs: list[Any] | None = None) -> tuple[float, list[str]]:
    """Groups/s of `n_workers` real RolloutWorker actors (placed with `worker_options`) feeding a real ReplayQueue
    that this process drains the way a learner does (without training), and the node of each actor.

    Staleness and back-pressure are lifted, so only sampling, scoring and the queue's data path are timed; the
    actors' start-up and a first batch are excluded. `refs`: object refs of (base payload, reward payload, train
    split), put once by the caller when it times several pool sizes.
    """
    from sopo_ray.distributed.control import RunControl
    from sopo_ray.distributed.group import caption_table
    from sopo_ray.distributed.replay_queue import ReplayQueue
    from sopo_ray.distributed.rollout import RolloutWorker
    from sopo_ray.distributed.schedule import SchedulePlan
    from sopo_ray.distributed.weights import WeightStore

    cfg = with_overrides(cfg, [f"schedule.total_steps={n_groups // cfg.schedule.batch_size + 4}",
                               "schedule.max_staleness=1000000", "schedule.rollout_ahead=8"])
    plan = SchedulePlan.from_config(cfg, len(caption_table(art.train.motion_ids, art.train.captions)))
    refs = refs or [ray.put(x) for x in (art.base_payload, art.reward_payload, art.train)]
    store = ray.remote(WeightStore).options(num_cpus=0).remote(2)
    ray.get(store.publish.remote(0, 0, {k: v.numpy() for k, v in art.base_payload["state"].items()}))
    queue = ray.remote(ReplayQueue).options(num_cpus=0).remote(plan)
    control = ray.remote(RunControl).options(num_cpus=0).remote(cfg.objective.tau, 64)
    workers = [ray.remote(RolloutWorker).options(**worker_options).remote(f"bench-{i}", cfg, *refs, queue, store,
                                                                          control, False) for i in range(n_workers)]
    nodes = [s["node"] for s in ray.get([w.stats.remote() for w in workers])]   # up, models loaded: not timed
    runs = [w.run.remote() for w in workers]
    batch = cfg.schedule.batch_size
    ray.get(queue.get_batch.remote(0, 0, batch, 600.0))                        # warm-up batch, excluded
    start, done, step = time.perf_counter(), 0, 1
    while done < n_groups:
        done += len(ray.get(queue.get_batch.remote(step, 0, batch, 600.0)).groups)
        step += 1
    rate = done / (time.perf_counter() - start)
    ray.get(queue.close.remote("bench"))
    ray.get(runs)
    for actor in (*workers, queue, store, control):
        ray.kill(actor)
    return rate, nodes
