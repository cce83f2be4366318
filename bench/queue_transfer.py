"""Queue transfer: groups/s through the real ReplayQueue (one object per ticket) vs the per-group queue it replaced
and raw object-store put/get, in one run.

    python bench/queue_transfer.py [--config configs/default.yaml] [--set key=value ...]
                                   [--paper-config configs/humanml3d_mdm.yaml] [--batches 30] [--rounds 2]

Two group sizes: the config's (x^l [data.max_frames, 263] float32, `schedule.batch_size` groups per learner batch,
`schedule.rollout_batch_size` per ticket) and the paper config's (T=196, batch 64, tickets of 32). On a simulated
two-node cluster (head + one node, each with its own raylet and object store, on this machine) each size is moved
`--batches` times by:
- raw `ray.put` + `ray.get` of the same group list in this process (the object store's own speed);
- an actor round trip of one numpy array of the same bytes (to an actor on the head / on the other node and back);
- a queue on the head: a feeder actor (on the head / on the other node) claims tickets and `put`s the groups like a
  rollout worker, and this process takes them as a learner does (`get_batch`, then fetching the groups), for
  - `per ticket`: the ReplayQueue as it is: one `ray.put` per delivered ticket, the learner fetches each ticket
    object once (`HeldGroups.fetch`);
  - `per group`: `PerGroupQueue` below, the ReplayQueue as it was before: one `ray.put` per group in the queue,
    one object per group for the learner to fetch (the baseline).
  The two take turns, `--rounds` times each (medians printed).
Prints MB and ms per learner batch, MB/s, groups/s, the ratio to raw put/get, the queue rows' ratio to the
per-group queue in the same setting, the feeder's time inside `queue.put` per group and the queue actor's CPU
time per group (its process, Ray's threads included). The queue rows are a pipeline (feeder put, queue put,
get_batch, fetch), so they show the slowest of its stages. "Other node" traffic crosses raylets over localhost
TCP, not a real network; the cores are shared, so compare ratios.
"""

from __future__ import annotations

import argparse
import os
import statistics
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
from sopo_ray.distributed.replay_queue import HeldGroups, ReplayQueue, Status
from sopo_ray.distributed.schedule import SchedulePlan


class TicketQueue(ReplayQueue):
    """The ReplayQueue as it is, plus its process's CPU seconds for the bench."""

    def cpu_s(self) -> float:
        return time.process_time()


class PerGroupQueue(TicketQueue):
    """The baseline: the ReplayQueue before one object per ticket. The queue `ray.put` each group as its own object
    and a learner fetches one object per group (the same board, waiting and accounting)."""

    def hold(self, groups: list[RolloutGroup]) -> list[Any]:
        return [ray.put([g]) for g in groups]

    def handout(self, held: list[tuple[Any, int]]) -> HeldGroups:
        return HeldGroups([refs[i] for refs, i in held], [(j, 0) for j in range(len(held))])


QUEUES = {"per group": PerGroupQueue, "per ticket": TicketQueue}


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


def through_queue(cfg: Config, kind: str, groups: list[RolloutGroup], n: int, head: str, where: dict[str, Any],
                  ) -> tuple[float, float, float]:
    """Seconds per learner batch taken from a queue of `kind` (QUEUES) on the head, fed by a feeder actor placed by
    `where`; the feeder's seconds per group inside `queue.put` (the rollout side's hand-over cost) and the queue
    actor's CPU seconds per group."""
    batch = cfg.schedule.batch_size
    cfg = with_overrides(cfg, [f"schedule.total_steps={n + 4}", "schedule.max_staleness=1000000",
                               "schedule.rollout_ahead=2", "deterministic=false"])
    plan = SchedulePlan.from_config(cfg, len(groups))
    on_head = {"scheduling_strategy": NodeAffinitySchedulingStrategy(head, soft=False)}
    queue = ray.remote(QUEUES[kind]).options(**actor_options(cfg.cluster, "helper", False), **on_head).remote(plan)
    feeder = ray.remote(ReplayFeeder).options(num_cpus=0, **where).remote("feeder", queue, groups)
    ray.get(feeder.node_id.remote())
    run = feeder.run.remote()
    ray.get(queue.get_batch.remote(0, 0, batch, 120.0)).groups.fetch()      # warm-up batch, excluded
    cpu0, start = ray.get(queue.cpu_s.remote()), time.perf_counter()
    for step in range(1, n + 1):
        reply = ray.get(queue.get_batch.remote(step, 0, batch, 120.0))
        assert reply.status is Status.OK and len(reply.groups.fetch()) == batch, reply.status
    elapsed = (time.perf_counter() - start) / n
    cpu = ray.get(queue.cpu_s.remote()) - cpu0
    ray.get(queue.close.remote("bench"))
    fed = ray.get(run)
    for actor in (feeder, queue):
        ray.kill(actor)
    return elapsed, fed["put_s"] / max(fed["groups"], 1), cpu / (n * batch)


Row = tuple[str, str, int, float, float, float | None, float | None]


def measure(name: str, cfg: Config, n: int, rounds: int, head: str, other: str) -> list[Row]:
    """(size, setting, groups per batch, MB per batch, seconds per batch, queue.put seconds per group, queue CPU
    seconds per group) rows for the group size of `cfg`; the queue kinds take turns `rounds` times (medians)."""
    frames, batch = cfg.data.max_frames, cfg.schedule.batch_size
    groups = synthetic_groups(batch * 2, frames, cfg.objective.k)
    mb = sum(group_bytes(g) for g in groups[:batch]) / 1e6
    array = np.stack([g.x_l for g in groups[:batch]])
    size = f"{name} T={frames} x{batch}, tickets of {cfg.schedule.rollout_batch_size}"
    pin = {node: {"scheduling_strategy": NodeAffinitySchedulingStrategy(node, soft=False)} for node in (head, other)}
    rows: list[Row] = [(size, "raw put + get", batch, mb, raw_put_get(groups[:batch], n), None, None),
                       (size, "actor echo, same node", batch, mb, round_trip(array, n, pin[head]), None, None),
                       (size, "actor echo, other node", batch, mb, round_trip(array, n, pin[other]), None, None)]
    for node, where in (("same node", head), ("other node", other)):
        runs: dict[str, list[tuple[float, float, float]]] = {kind: [] for kind in QUEUES}
        for _ in range(rounds):
            for kind in QUEUES:
                runs[kind].append(through_queue(cfg, kind, groups, n, head, pin[where]))
        for kind, results in runs.items():
            rows.append((size, f"queue {kind}, feeder on {node}", batch, mb,
                         *(statistics.median(r[i] for r in results) for i in range(3))))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="configs/default.yaml")
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    parser.add_argument("--paper-config", default="configs/humanml3d_mdm.yaml",
                        help="config whose group size is the second row set (T=196, batch 64)")
    parser.add_argument("--batches", type=int, default=30, help="learner batches moved per setting")
    parser.add_argument("--rounds", type=int, default=2, help="turns of each queue kind per setting (medians)")
    args = parser.parse_args()
    console = Console()
    configs = [("config", load_config(args.config, args.overrides)), ("paper", load_config(args.paper_config))]
    cluster, names = simulated_cluster(head_cpus=1, nodes=[{"num_cpus": 1}], store_mib=600)
    head, other = list(names)
    console.print(f"{args.batches} learner batches per setting, {args.rounds} rounds per queue kind, head + 1 "
                  f"simulated node, {os.cpu_count()} CPUs, load (1 min) {os.getloadavg()[0]:.1f} (shared machines "
                  "make these numbers noisy; compare the ratios)")
    try:
        rows = [row for name, cfg in configs for row in measure(name, cfg, args.batches, args.rounds, head, other)]
    finally:
        ray.shutdown()
        cluster.shutdown()
    table = Table(title="rollout-group transfer, per learner batch (MB, ms)")
    for col in ("batch", "path", "MB", "ms", "MB/s", "groups/s", "vs raw", "vs per group", "put ms/group",
                "queue CPU ms/group"):
        table.add_column(col, justify="left" if col in ("batch", "path") else "right")
    raw: dict[str, float] = {}
    per_group: dict[tuple[str, str], float] = {}
    for size, setting, groups, mb, seconds, put_s, cpu_s in rows:
        raw.setdefault(size, mb / seconds)
        node = setting.split(", ")[-1]
        if setting.startswith("queue per group"):
            per_group[size, node] = seconds
        versus = f"{per_group[size, node] / seconds:.1f}x" if setting.startswith("queue") else ""
        table.add_row(size, setting, f"{mb:.1f}", f"{seconds * 1e3:.1f}", f"{mb / seconds:.0f}",
                      f"{groups / seconds:.0f}", f"{mb / seconds / raw[size]:.2f}x", versus,
                      "" if put_s is None else f"{put_s * 1e3:.2f}", "" if cpu_s is None else f"{cpu_s * 1e3:.2f}")
    console.print(table)
    console.print("put ms/group: the feeder's time inside queue.put per group; queue CPU: the queue actor "
                  f"process's CPU time per group moved. Load (1 min) at the end: {os.getloadavg()[0]:.1f}.")


if __name__ == "__main__":
    main()
