"""Learner busy fraction with and without prefetching the next batch (`schedule.prefetch_batches`).

    python bench/learner_prefetch.py [--config configs/default.yaml] [--set key=value ...] [--blocks 6]
                                     [--block-steps 10] [--motions 256]

Two real `Learner`s (`distributed.learner`) live in one Ray Train worker (1 CPU, gloo), identical except for
`schedule.prefetch_batches` (off, on), each with its own ReplayQueue, WeightStore and RunControl; each queue is
kept full by a `harness.ReplayFeeder` that serves pre-made groups through the rollout workers' own ticket loop, so
rollout is never the limit and what the learner waits for is its own round trips (the stop check, the queue's
`get_batch`, fetching the groups). The model is the config's policy with fresh weights (timings do not depend on
the values), the data an in-memory synthetic split of `--motions` motions of `data.max_frames` frames. They take
turns in blocks of `--block-steps` `train_step`s (the first step of a block is not timed: a prefetch may have
finished while the other learner ran); weights are published every `schedule.sync_interval` steps as in a run.
Printed per setting: median step ms, the mean of `health/learner_idle_frac` (share of the step spent in `wait`),
the busy fraction (1 - idle), and the ratios prefetch on / off.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import threading
import time
from typing import Any

import numpy as np
import ray
import torch
from harness import ReplayFeeder, fresh_payload, local_ray, synthetic_groups
from rich.console import Console
from rich.table import Table

from sopo_ray.config import Config, load_config, with_overrides
from sopo_ray.data import MotionDataset
from sopo_ray.distributed.control import RunControl
from sopo_ray.distributed.group import caption_table
from sopo_ray.distributed.learner import Learner, LearnerSetup
from sopo_ray.distributed.placement import train_resources_per_worker
from sopo_ray.distributed.replay_queue import ReplayQueue
from sopo_ray.distributed.resume import ResumePoint, restore_services
from sopo_ray.distributed.schedule import SchedulePlan
from sopo_ray.distributed.weights import WeightStore, publish_keys

SETTINGS = ("prefetch off", "prefetch on")
WORDS = ["walks forward", "jumps", "waves", "kicks", "turns left", "runs", "sits down", "crawls"]


def synthetic_split(n: int, frames: int, seed: int = 0) -> MotionDataset:
    """`n` random motions of 60-100% of `frames` frames, two captions each from a small vocabulary."""
    rng = np.random.default_rng(seed)
    lengths = rng.integers(max(1, int(0.6 * frames)), frames + 1, n).astype(np.int64)
    features = rng.standard_normal((n, frames, 263), dtype=np.float32)
    captions = [[f"a person {WORDS[i % len(WORDS)]}", f"someone {WORDS[(i + 3) % len(WORDS)]}"] for i in range(n)]
    return MotionDataset(motion_ids=[f"b{i}" for i in range(n)], features=features, lengths=lengths,
                         captions=captions, params=None, mean=np.zeros(263, np.float32), std=np.ones(263, np.float32),
                         data_id="bench-prefetch", skeleton="t2m")


def turns_loop(config: dict[str, Any]) -> None:
    """Ray Train worker: both Learners, in turns of `block_steps` steps; their timed step records go to the first
    setting's run control."""
    learners = [Learner(setup) for setup in config["setups"]]
    records: dict[str, list[dict[str, float]]] = {name: [] for name in SETTINGS}
    for _ in range(config["blocks"]):
        for name, learner in zip(SETTINGS, learners, strict=True):
            for i in range(config["block_steps"] + 1):
                t0 = time.perf_counter()
                record = learner.train_step()
                if i > 0:
                    records[name].append({"wall_s": time.perf_counter() - t0,
                                          "idle": record["health/learner_idle_frac"],
                                          "wait_s": record["timing/wait_s"]})
    for learner in learners:
        learner.source.close()
    ray.get(config["setups"][0].control.report.remote([records]))


def measure(cfg: Config, args: argparse.Namespace) -> dict[str, list[dict[str, float]]]:
    """Step records per setting (see the module docstring)."""
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    train = synthetic_split(args.motions, cfg.data.max_frames)
    payload = fresh_payload(cfg, train.mean, train.std)
    groups = synthetic_groups(2 * cfg.schedule.batch_size, cfg.data.max_frames, cfg.objective.k)
    base, dataset = ray.put(payload), ray.put(train)
    keys = publish_keys(cfg.schedule.publish_weights, payload)
    handles, setups = [], []
    with tempfile.TemporaryDirectory(prefix="sopo-bench-") as storage:
        for i, name in enumerate(SETTINGS):
            run_cfg = with_overrides(cfg, [f"schedule.prefetch_batches={name == 'prefetch on'}"])
            plan = SchedulePlan.from_config(run_cfg, len(caption_table(train.motion_ids, train.captions)))
            store = ray.remote(WeightStore).options(num_cpus=0).remote(plan.kept_versions)
            control = ray.remote(RunControl).options(num_cpus=0).remote(cfg.objective.tau, 64)
            queue = ray.remote(ReplayQueue).options(num_cpus=0).remote(plan)
            restore_services(ResumePoint(), payload["state"], store, queue, keys)
            feeder = ray.remote(ReplayFeeder).options(num_cpus=0).remote(f"feeder-{i}", queue, groups)
            handles.append((feeder, feeder.run.remote(), queue, store, control))
            setups.append(LearnerSetup(cfg=run_cfg, base=base, dataset=dataset, store=store, control=control,
                                       tau=cfg.objective.tau, reference_id="bench", storage=f"{storage}/{i}",
                                       queue=queue))
        trainer = TorchTrainer(turns_loop, train_loop_config={"setups": setups, "blocks": args.blocks,
                                                              "block_steps": args.block_steps},
                               scaling_config=ScalingConfig(num_workers=1, use_gpu=False,
                                                            resources_per_worker=train_resources_per_worker(
                                                                cfg.cluster, False)),
                               run_config=RunConfig(name="learner-prefetch", storage_path=storage))
        errors: list[Exception] = []

        def fit() -> None:
            try:
                trainer.fit()
            except Exception as exc:  # noqa: BLE001 - re-raised in the main thread
                errors.append(exc)

        thread = threading.Thread(target=fit, daemon=True)
        thread.start()
        thread.join()
    if errors:
        raise errors[0]
    (records,) = ray.get(setups[0].control.drain.remote())
    for feeder, run, queue, store, control in handles:
        ray.get(queue.close.remote("bench"))
        ray.get(run)
        stats = ray.get(queue.stats.remote())
        assert stats["accounting_ok"], stats
        for handle in (feeder, queue, store, control):
            ray.kill(handle)
    return records


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="configs/default.yaml")
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    parser.add_argument("--blocks", type=int, default=6, help="timed blocks per setting")
    parser.add_argument("--block-steps", type=int, default=10, help="timed learner steps per block")
    parser.add_argument("--motions", type=int, default=256, help="motions of the synthetic train split")
    args = parser.parse_args()
    steps = args.blocks * (args.block_steps + 1)
    cfg = with_overrides(load_config(args.config, args.overrides),
                         [f"schedule.total_steps={steps + 2}", f"checkpoint.interval={steps + 2}",
                          "cluster.use_gpu=false", "optimizer.warmup_steps=0"])
    if cfg.torch_threads:
        torch.set_num_threads(cfg.torch_threads)
    console = Console(width=150)
    console.print(f"{cfg.name}: batch {cfg.schedule.batch_size}, K={cfg.objective.k}, T={cfg.data.max_frames}, "
                  f"sync_interval {cfg.schedule.sync_interval}, {cfg.torch_threads or 'all'} torch thread(s), "
                  f"{args.blocks} x {args.block_steps} timed steps per setting, {os.cpu_count()} CPUs, load "
                  f"{os.getloadavg()[0]:.1f}")
    local_ray(os.cpu_count() or 2)
    try:
        started = time.time()
        records = measure(cfg, args)
    finally:
        ray.shutdown()
    table = Table(title="learner steps, pre-made groups (rollout never the limit)")
    for col in ("setting", "step ms (median)", "wait ms (median)", "idle frac (mean)", "busy frac",
                "step time vs off", "idle vs off", "busy vs off"):
        table.add_column(col, justify="left" if col == "setting" else "right")
    summary = {name: {"step": statistics.median(r["wall_s"] for r in records[name]),
                      "wait": statistics.median(r["wait_s"] for r in records[name]),
                      "idle": statistics.mean(r["idle"] for r in records[name])} for name in SETTINGS}
    off = summary["prefetch off"]
    for name in SETTINGS:
        s = summary[name]
        table.add_row(name, f"{1e3 * s['step']:.1f}", f"{1e3 * s['wait']:.1f}", f"{s['idle']:.3f}",
                      f"{1 - s['idle']:.3f}", f"{s['step'] / off['step']:.2f}x",
                      f"{s['idle'] / max(off['idle'], 1e-9):.2f}x", f"{(1 - s['idle']) / (1 - off['idle']):.3f}x")
    console.print(table)
    console.print(f"{time.time() - started:.0f} s; load (1 min) at the end {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
