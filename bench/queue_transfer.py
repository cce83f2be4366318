"""Queue transfer: MB/s of rollout groups through the real ReplayQueue vs raw object-store put/get, in one run.

    python bench/queue_transfer.py [--config configs/default.yaml] [--set key=value ...]
                                   [--paper-config configs/humanml3d_mdm.yaml] [--batches 30]

Two group sizes: the config's (x^l [data.max_frames, 263] float32, `schedule.batch_size` groups per learner batch)
and the paper config's (T=196, batch 64). On a simulated two-node cluster (head + one node, each with its own
raylet and object store, on this machine) each size is moved `--batches` times by:
- raw `ray.put` + `ray.get` of the same group list in this process (the object store's own speed);
- an actor round trip of one numpy array of the same bytes (to an actor on the head / on the other node and back);
- the ReplayQueue: a feeder actor (on the head / on the other node) claims tickets and `put`s the groups like a
  rollout worker, the queue stores each group with `ray.put`, and this process takes them as a learner does
  (`get_batch` + `ray.get`).
Prints MB and ms per learner batch, MB/s, groups/s, the ratio to raw put/get and, for the queue, the feeder's time
inside `queue.put` per group. The queue rows are a pipeline (feeder put, queue ray.put per group, get_batch,
ray.get), so they show the slowest of its stages. "Other node" traffic crosses raylets over localhost TCP, not a
real network; the cores are shared, so compare ratios.
"""

from __future__ import annotations

import argparse
import os
import time
from typing import Any

import numpy as np
import ray
from harness import ReplayFeeder, group_bytes, simulated_cluster, synthetic_groups
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy
from rich.console import Console
from rich.table import Table

from sopo_ray.config import Config, load_config, with_overrides
from sopo_ray.distributed.group import RolloutGroup
from sopo_ray.distributed.placement import actor_options
from sopo_ray.distributed.replay_queue import ReplayQueue, Status
from sopo_ray.distributed.schedule import SchedulePlan


class Echo:
    """Returns what it is sent (an actor round trip)."""

    def echo(self, x: np.ndarray) -> np.ndarray:
        return x


def raw_put_get(groups: list[RolloutGroup], n: int) -> float:
    """Seconds per `ray.put` + `ray.get` of the group list, in this process."""
    ray.get(ray.put(groups))
    start = time.perf_counter()
    for _ in range(n):
        ray.get(ray.put(groups))
    return (time.perf_counter() - start) / n


def round_trip(array: np.ndarray, n: int, where: dict[str, Any]) -> float:
    """Seconds per echo of `array` through an actor placed by `where`."""
    actor = ray.remote(Echo).options(num_cpus=0, **where).remote()
    ray.get(actor.echo.remote(array))
    start = time.perf_counter()
    for _ in range(n):
        ray.get(actor.echo.remote(array))
    elapsed = (time.perf_counter() - start) / n
    ray.kill(actor)
    return elapsed


def through_queue(cfg: Config, groups: list[RolloutGroup], n: int, head: str, where: dict[str, Any],
                  ) -> tuple[float, float]:
    """Seconds per learner batch taken from a ReplayQueue on the head, fed by a feeder actor placed by `where`,
    and the feeder's seconds per group inside `queue.put` (the rollout side's hand-over cost)."""
    batch = cfg.schedule.batch_size
    cfg = with_overrides(cfg, [f"schedule.total_steps={n + 4}", "schedule.max_staleness=1000000",
                               "schedule.rollout_ahead=2", "deterministic=false"])
    plan = SchedulePlan.from_config(cfg, len(groups))
    on_head = {"scheduling_strategy": NodeAffinitySchedulingStrategy(head, soft=False)}
    queue = ray.remote(ReplayQueue).options(**actor_options(cfg.cluster, "helper", False), **on_head).remote(plan)
    feeder = ray.remote(ReplayFeeder).options(num_cpus=0, **where).remote("feeder", queue, groups)
    ray.get(feeder.node_id.remote())
    run = feeder.run.remote()
    ray.get(ray.get(queue.get_batch.remote(0, 0, batch, 120.0)).refs)      # warm-up batch, excluded
    start = time.perf_counter()
    for step in range(1, n + 1):
        reply = ray.get(queue.get_batch.remote(step, 0, batch, 120.0))
        assert reply.status is Status.OK and len(ray.get(reply.refs)) == batch, reply.status
    elapsed = (time.perf_counter() - start) / n
    ray.get(queue.close.remote("bench"))
    fed = ray.get(run)
    for actor in (feeder, queue):
        ray.kill(actor)
    return elapsed, fed["put_s"] / max(fed["groups"], 1)


def measure(name: str, cfg: Config, n: int, head: str, other: str,
            ) -> list[tuple[str, str, int, float, float, float | None]]:
    """(size, setting, groups per batch, MB per batch, seconds per batch, queue.put seconds per group) rows for the
    group size of `cfg`."""
    frames, batch = cfg.data.max_frames, cfg.schedule.batch_size
    groups = synthetic_groups(batch * 2, frames, cfg.objective.k)
    mb = sum(group_bytes(g) for g in groups[:batch]) / 1e6
    array = np.stack([g.x_l for g in groups[:batch]])
    size = f"{name} T={frames} x{batch}"
    pin = {node: {"scheduling_strategy": NodeAffinitySchedulingStrategy(node, soft=False)} for node in (head, other)}
    return [(size, "raw put + get", batch, mb, raw_put_get(groups[:batch], n), None),
            (size, "actor echo, same node", batch, mb, round_trip(array, n, pin[head]), None),
            (size, "actor echo, other node", batch, mb, round_trip(array, n, pin[other]), None),
            (size, "queue, same node", batch, mb, *through_queue(cfg, groups, n, head, pin[head])),
            (size, "queue, other node", batch, mb, *through_queue(cfg, groups, n, head, pin[other]))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="configs/default.yaml")
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    parser.add_argument("--paper-config", default="configs/humanml3d_mdm.yaml",
                        help="config whose group size is the second row set (T=196, batch 64)")
    parser.add_argument("--batches", type=int, default=30, help="learner batches moved per setting")
    args = parser.parse_args()
    console = Console()
    configs = [("config", load_config(args.config, args.overrides)), ("paper", load_config(args.paper_config))]
    cluster, names = simulated_cluster(head_cpus=1, nodes=[{"num_cpus": 1}], store_mib=600)
    head, other = list(names)
    console.print(f"{args.batches} learner batches per setting, head + 1 simulated node, {os.cpu_count()} CPUs "
                  "(shared machines make these numbers noisy; compare the ratios)")
    try:
        rows = [row for name, cfg in configs for row in measure(name, cfg, args.batches, head, other)]
    finally:
        ray.shutdown()
        cluster.shutdown()
    table = Table(title="rollout-group transfer, per learner batch (MB, ms)")
    for col in ("batch", "path", "MB", "ms", "MB/s", "groups/s", "vs raw", "put ms/group"):
        table.add_column(col, justify="left" if col in ("batch", "path") else "right")
    raw = {}
    for size, setting, groups, mb, seconds, put_s in rows:
        raw.setdefault(size, mb / seconds)
        table.add_row(size, setting, f"{mb:.1f}", f"{seconds * 1e3:.1f}", f"{mb / seconds:.0f}",
                      f"{groups / seconds:.0f}", f"{mb / seconds / raw[size]:.2f}x",
                      "" if put_s is None else f"{put_s * 1e3:.2f}")
    console.print(table)
    console.print(f"put ms/group: the feeder's time inside queue.put per group. Load (1 min) at the end: "
                  f"{os.getloadavg()[0]:.1f}.")


if __name__ == "__main__":
    main()
