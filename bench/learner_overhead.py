"""Learner overhead: the SoPo step under Ray Train (TorchTrainer, 1 CPU worker, gloo) vs a plain torch loop.

    python bench/learner_overhead.py [--config configs/default.yaml] [--set key=value ...] [--blocks 6]
                                     [--block-steps 10]

Every setting trains the same policy (the config's cached base model) against the same frozen reference on the
same rollout groups (sampled once here with the base model, `schedule.batch_size` per step, cycled), with the same
loss (`algorithm.train_on_batch`), gradient clipping, AdamW and lr schedule, models set up by
`algorithm.build_models`:
- plain loop (`collate` -> terms -> loss -> backward -> step, batches already in memory), run in this process, in
  a plain Ray actor (1 CPU), and inside the TorchTrainer worker (same process and thread as the Learner);
- the Learner: the real `Learner.train_step` in a TorchTrainer worker (1 CPU, gloo; `prepare_model`, the stop
  check, the batch taken from the real ReplayQueue fed by a replaying actor, weights published every
  `sync_interval` steps).
They take turns in blocks of `--block-steps` steps (the others wait), so a machine whose load drifts slows all
alike. Prints the median ms of the whole step and of each stage per setting and two ratios: Learner / plain loop
in a Ray actor (the whole cost of training under Ray Train) and Learner / plain loop in the Train worker (the
Learner's own code path: queue, stop check, fresh groups from the object store). Identical code can run ~+-20%
apart in two processes on a loaded machine. Also prints the one-off start-up (fit() until the Learner is built).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
import threading
import time
from typing import Any

import ray
import torch
from harness import ReplayFeeder, local_ray
from rich.console import Console
from rich.table import Table

from sopo_ray import artifacts
from sopo_ray.algorithm import build_models, preference_batch, sample_groups, timed, train_on_batch
from sopo_ray.config import Config, load_config, with_absolute_paths, with_overrides
from sopo_ray.distributed.control import RunControl
from sopo_ray.distributed.group import RolloutGroup, caption_table
from sopo_ray.distributed.learner import Learner, LearnerSetup
from sopo_ray.distributed.placement import actor_options, train_resources_per_worker
from sopo_ray.distributed.replay_queue import ReplayQueue
from sopo_ray.distributed.schedule import SchedulePlan
from sopo_ray.distributed.seeds import derive_seed
from sopo_ray.distributed.weights import WeightStore
from sopo_ray.models.generator import generator_from_payload
from sopo_ray.models.text_encoder import load_text_cache
from sopo_ray.reward import reward_from_payload

STAGES = ("wait", "collate", "forward", "loss", "backward", "update", "publish")
HERE, ACTOR, TRAIN_PLAIN, LEARNER = "plain: here", "plain: actor", "plain: Train worker", "Learner: Train worker"
COMPUTE = ("collate", "forward", "loss", "backward", "update")


class Turns:
    """Whose turn it is (one of the settings): the Learner and the three plain loops take turns.
    'abort' (the Ray side failed) lets every waiter through for good."""

    def __init__(self) -> None:
        self.turn, self.cond = LEARNER, asyncio.Condition()

    async def wait_for(self, who: str) -> None:
        async with self.cond:
            await self.cond.wait_for(lambda: self.turn in (who, "abort"))

    async def hand_to(self, who: str) -> None:
        async with self.cond:
            if self.turn != "abort":
                self.turn = who
            self.cond.notify_all()


def rollout_pool(cfg: Config, art: Any, n: int) -> list[RolloutGroup]:
    """`n` real groups sampled with the base model (what the learner would take from the queue)."""
    policy = generator_from_payload(art.base_payload).eval()
    reward = reward_from_payload(art.reward_payload).eval()
    table = caption_table(art.train.motion_ids, art.train.captions)
    plan = SchedulePlan.from_config(cfg, len(table))
    return sample_groups(policy, reward, art.train.features, art.train.lengths,
                         [table[i] for i in plan.captions(0, n)], version=0, k=cfg.objective.k,
                         steps=cfg.diffusion.rollout_sample_steps, guidance=cfg.diffusion.guidance_scale,
                         eta=cfg.diffusion.rollout_ddim_eta, run_seed=cfg.seed, keep_best=False)


class PlainLoop:
    """The same SoPo step in this process (`algorithm.train_on_batch`, as the Learner calls it), models built by
    `algorithm.build_models` as the Learner builds them; batches already in memory."""

    def __init__(self, cfg: Config, base_payload: dict[str, Any], dataset: Any, pool: list[RolloutGroup]) -> None:
        if cfg.torch_threads:
            torch.set_num_threads(cfg.torch_threads)
        load_text_cache(cfg)
        self.cfg, self.dataset, self.pool, self.step = cfg, dataset, pool, 0
        self.models = build_models(cfg, base_payload)

    def train_step(self) -> dict[str, float]:
        """One step; its wall seconds and per-stage seconds, named like the Learner's step record."""
        cfg, n, s = self.cfg, self.cfg.schedule.batch_size, {}
        t0 = time.perf_counter()
        groups = [self.pool[(self.step * n + i) % len(self.pool)] for i in range(n)]
        batch = preference_batch(cfg.objective.name, groups, self.dataset.features, self.dataset.lengths, [0] * n)
        timed(s, "collate", t0)
        gen = torch.Generator().manual_seed(derive_seed(cfg.seed, "learner", self.step, 0))
        m = self.models
        train_on_batch(cfg, self.step, m.model, m.policy, m.reference, m.optimizer, m.params, batch, gen, "cpu",
                       cfg.objective.tau, s)
        self.step += 1
        return {"wall_s": time.perf_counter() - t0, **{f"timing/{k}_s": v for k, v in s.items()}}


def run_blocks(roles: list[tuple[str, Any, str]], turns: Any, warmup: int, blocks: int, size: int,
               ) -> dict[str, list[dict[str, float]]]:
    """For each block, for each role (name, step function, next name) in order: wait for the role's turn, run
    `size` timed steps (plus `warmup` untimed ones in the first block), hand the turn on. Timed records by role."""
    out: dict[str, list[dict[str, float]]] = {name: [] for name, _, _ in roles}
    for b in range(blocks):
        for name, step_fn, after in roles:
            ray.get(turns.wait_for.remote(name))
            for i in range(size + (warmup if b == 0 else 0)):
                t0 = time.perf_counter()
                record = step_fn()
                if b > 0 or i >= warmup:
                    out[name].append({**{k: v for k, v in record.items() if k.startswith("timing/")},
                                      "wall_s": time.perf_counter() - t0})
            ray.get(turns.hand_to.remote(after))
    return out


class PlainActor:
    """`PlainLoop` in a plain Ray actor (a Ray worker process)."""

    def __init__(self, cfg: Config, base_payload: dict[str, Any], dataset: Any, pool: list[RolloutGroup]) -> None:
        self.loop = PlainLoop(cfg, base_payload, dataset, pool)

    def run_blocks(self, turns: Any, warmup: int, blocks: int, size: int) -> dict[str, list[dict[str, float]]]:
        return run_blocks([(ACTOR, self.loop.train_step, LEARNER)], turns, warmup, blocks, size)


def timed_train_loop(config: dict[str, Any]) -> None:
    """Ray Train worker: the real Learner's `train_step`, then `PlainLoop` in the same worker, in turns with the
    plain loops outside; timings go to the run control."""
    setup: LearnerSetup = config["setup"]
    learner = Learner(setup)
    ready = time.time()
    plain = PlainLoop(setup.cfg, ray.get(setup.base), ray.get(setup.dataset), config["pool"])
    out = run_blocks([(LEARNER, learner.train_step, TRAIN_PLAIN), (TRAIN_PLAIN, plain.train_step, HERE)],
                     config["turns"], config["warmup"], config["blocks"], config["block_steps"])
    ray.get(setup.control.report.remote([{"ready_at": ready, "records": out}]))


def interleaved(cfg: Config, art: Any, pool: list[RolloutGroup], args: argparse.Namespace,
                ) -> tuple[dict[str, list[dict[str, float]]], float]:
    """Step records by setting (plain loop here, in a Ray actor, in the Train worker; the Learner), all taking
    turns; and the seconds from TorchTrainer.fit() to a built Learner."""
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    plan = SchedulePlan.from_config(cfg, len(caption_table(art.train.motion_ids, art.train.captions)))
    helper = actor_options(cfg.cluster, "helper", False)
    store = ray.remote(WeightStore).options(**helper).remote(plan.kept_versions)
    ray.get(store.publish.remote(0, 0, {k: v.numpy() for k, v in art.base_payload["state"].items()}))
    control = ray.remote(RunControl).options(**helper).remote(cfg.objective.tau, 64)
    queue = ray.remote(ReplayQueue).options(**helper).remote(plan)
    feeder = ray.remote(ReplayFeeder).options(**helper).remote("feeder", queue, pool)
    turns = ray.remote(Turns).options(**helper).remote()
    run = feeder.run.remote()
    base, dataset = ray.put(art.base_payload), ray.put(art.train)
    actor = ray.remote(PlainActor).options(num_cpus=1).remote(cfg, base, dataset, pool)
    actor_records = actor.run_blocks.remote(turns, args.warmup, args.blocks, args.block_steps)
    plain = PlainLoop(cfg, art.base_payload, art.train, pool)
    errors: list[Exception] = []
    with tempfile.TemporaryDirectory(prefix="sopo-bench-") as storage:
        setup = LearnerSetup(cfg=cfg, base=base, dataset=dataset, store=store, control=control, tau=cfg.objective.tau,
                             reference_id="bench", storage=storage, queue=queue)
        config = {"setup": setup, "turns": turns, "pool": pool, "warmup": args.warmup, "blocks": args.blocks,
                  "block_steps": args.block_steps}
        trainer = TorchTrainer(timed_train_loop, train_loop_config=config,
                               scaling_config=ScalingConfig(num_workers=1, use_gpu=False,
                                                            resources_per_worker=train_resources_per_worker(
                                                                cfg.cluster, False)),
                               run_config=RunConfig(name="learner-1", storage_path=storage))

        def fit() -> None:
            try:
                trainer.fit()
            except Exception as exc:  # noqa: BLE001 - re-raised in the main thread
                errors.append(exc)
                ray.get(turns.hand_to.remote("abort"))

        thread = threading.Thread(target=fit, daemon=True)
        fit_started = time.time()
        thread.start()
        # the Train worker goes first (its start-up runs alone), then this process, then the actor
        records = run_blocks([(HERE, plain.train_step, ACTOR)], turns, args.warmup, args.blocks, args.block_steps)
        records.update(ray.get(actor_records))
        thread.join()
    if errors:
        raise errors[0]
    (report,) = ray.get(control.drain.remote())
    records.update(report["records"])
    ray.get(queue.close.remote("bench"))
    ray.get(run)
    for handle in (feeder, queue, store, control, turns, actor):
        ray.kill(handle)
    return records, report["ready_at"] - fit_started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="configs/default.yaml")
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    parser.add_argument("--blocks", type=int, default=6, help="timed blocks per side")
    parser.add_argument("--block-steps", type=int, default=10, help="learner steps per block")
    parser.add_argument("--warmup", type=int, default=5, help="untimed steps before the first block, per side")
    args = parser.parse_args()
    total = args.warmup + args.blocks * args.block_steps
    cfg = with_overrides(with_absolute_paths(load_config(args.config, args.overrides)),
                         [f"schedule.total_steps={total + 1}", "cluster.use_gpu=false"])
    console = Console()
    art = artifacts.resolve(cfg, console, need_evaluator=False)
    if cfg.torch_threads:
        torch.set_num_threads(cfg.torch_threads)
    load_text_cache(cfg)
    pool = rollout_pool(cfg, art, 2 * cfg.schedule.batch_size)
    console.print(f"objective {cfg.objective.name}, batch {cfg.schedule.batch_size}, K={cfg.objective.k}, "
                  f"T={cfg.data.max_frames}, {cfg.torch_threads or 'all'} torch thread(s), {args.blocks} x "
                  f"{args.block_steps} timed steps per side after {args.warmup}, {os.cpu_count()} CPUs "
                  "(shared machines make these numbers noisy)")
    local_ray(os.cpu_count() or 2)
    try:
        records, startup_s = interleaved(cfg, art, pool, args)
    finally:
        ray.shutdown()
    table = Table(title="learner step time (ms, median over the timed steps)")
    names = [HERE, ACTOR, TRAIN_PLAIN, LEARNER]
    for col in ("part of the step", *names, "Learner / plain actor", "Learner / plain Train"):
        table.add_column(col, justify="left" if col == "part of the step" else "right")
    parts = [("whole step", lambda r: r["wall_s"]),
             ("compute (collate..update)", lambda r: sum(r.get(f"timing/{s}_s", 0.0) for s in COMPUTE))]
    parts += [(f"  {stage}", lambda r, s=stage: r.get(f"timing/{s}_s", 0.0)) for stage in STAGES]
    for name, pick in parts:
        ms = [1e3 * statistics.median([pick(r) for r in records[n]]) for n in names]
        table.add_row(name, *(f"{m:.1f}" for m in ms),
                      *(f"{ms[3] / x:.2f}x" if x > 0.05 else "-" for x in (ms[1], ms[2])))
    console.print(table)
    console.print(f"One-off: {startup_s:.1f} s from TorchTrainer.fit() to a built Learner (Train controller, worker "
                  "group, gloo process group, models). 'wait' under Ray Train is the stop check (a RunControl "
                  f"call) plus the replay-queue get. Load (1 min) at the end: {os.getloadavg()[0]:.1f}.")

if __name__ == "__main__":
    main()
