"""Rollout scaling: groups/s vs number of rollout actors (1, 2, 4) on a simulated multi-node Ray cluster.

    python bench/rollout_scaling.py [--config configs/default.yaml] [--set key=value ...] [--groups 192]
                                    [--actors 1,2,4] [--nodes 4]

Starts a head (0 CPUs, like cluster/gpu.yaml's head) and `--nodes` worker nodes on this machine, each advertising
1 CPU and the custom resource `rollout: 1` (a rollout node type), with `cluster.rollout_resource=rollout` so the
rollout actors are placed exactly as the driver places them (`placement.actor_options(..., "rollout")`). For each
pool size the real pipeline pieces run (ReplayQueue, WeightStore, RolloutWorker actors with the config's cached
base and reward models); this process drains the queue like a learner (without training). Prints groups/s, the
ratio to 1 actor, the machine's 1-minute load average after each setting and the node each actor landed on.

The simulated nodes share this machine's cores: with 2 cores, 2 actors can at best double the rate and 4 actors
oversubscribe (4 actors on 2 cores plus the queue and this process), so the curve rises and then flattens. That
shape, not the absolute numbers, is the result; a real cluster has a core (or GPU) behind every advertised unit.
"""

from __future__ import annotations

import argparse
import os

import ray
from harness import pool_rate, simulated_cluster
from rich.console import Console
from rich.table import Table

from sopo_ray import artifacts
from sopo_ray.config import load_config, with_absolute_paths
from sopo_ray.distributed.placement import actor_options


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="configs/default.yaml")
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    parser.add_argument("--groups", type=int, default=192, help="groups timed per pool size")
    parser.add_argument("--actors", default="1,2,4", help="comma-separated pool sizes")
    parser.add_argument("--nodes", type=int, default=4, help="simulated rollout nodes (1 CPU, rollout: 1 each)")
    args = parser.parse_args()
    sizes = [int(x) for x in args.actors.split(",")]
    if sizes[0] != 1:
        parser.error("--actors must start with 1 (the baseline the other pool sizes are compared with)")
    if max(sizes) > args.nodes:
        parser.error(f"--actors asks for {max(sizes)} actors but --nodes {args.nodes} hosts at most {args.nodes}")
    cfg = with_absolute_paths(load_config(args.config, [*args.overrides, "cluster.rollout_resource=rollout",
                                                    "cluster.use_gpu=false"]))
    console = Console()
    art = artifacts.resolve(cfg, console, need_evaluator=False)
    console.print(f"K={cfg.objective.k}, {cfg.diffusion.rollout_sample_steps} DDIM steps, rollout batch "
                  f"{cfg.schedule.rollout_batch_size}, {args.groups} groups per pool size; head (0 CPUs) + "
                  f"{args.nodes} simulated nodes (1 CPU, rollout: 1) on {os.cpu_count()} real CPUs "
                  "(shared machines make these numbers noisy; compare the ratios)")
    cluster, names = simulated_cluster(head_cpus=0, nodes=[{"num_cpus": 1, "resources": {"rollout": 1}}] * args.nodes,
                                       store_mib=500)
    try:
        refs = [ray.put(x) for x in (art.base_payload, art.reward_payload, art.train)]
        placement = actor_options(cfg.cluster, "rollout", False)
        rows = [(n, *pool_rate(cfg, art, args.groups, n, placement, refs), os.getloadavg()[0]) for n in sizes]
    finally:
        ray.shutdown()
        cluster.shutdown()
    base = rows[0][1]
    table = Table(title="rollout throughput vs pool size (simulated nodes)")
    for col in ("rollout actors", "groups/s", "vs 1 actor", "per actor", "load (1 min)", "nodes"):
        table.add_column(col, justify="left" if col == "nodes" else "right")
    for n, rate, nodes, load in rows:
        table.add_row(str(n), f"{rate:.2f}", f"{rate / base:.2f}x", f"{rate / n / base:.2f}x", f"{load:.1f}",
                      ", ".join(names.get(node, node[:8]) for node in nodes))
    console.print(table)


if __name__ == "__main__":
    main()
