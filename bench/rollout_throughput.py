"""Rollout throughput: the same sampler in a plain loop, then through Ray with 1 and 2 rollout actors, in one run.

    python bench/rollout_throughput.py [--config configs/default.yaml] [--set key=value ...] [--groups 64]

Each setting generates `--groups` groups (K samples per caption, DDIM with `diffusion.rollout_sample_steps` and
classifier-free guidance, scored by the reward model) with the config's cached base and reward models. The Ray
settings run the real pipeline pieces (ReplayQueue, WeightStore, RolloutWorker actors; the bench drains the queue
as a learner would, without training) so the ratio to the plain loop is the cost of the pipeline itself, and the
2-actor row is how far the pool scales on this machine. With 2 cores, 2 actors compete with each other and with
the bench process: expect at most ~2x, less on a busy machine. Prints groups/s and ratios to the plain loop.
"""

from __future__ import annotations

import argparse
import os
import time

import ray
import torch
from harness import pool_rate
from rich.console import Console
from rich.table import Table

from sopo_ray import artifacts
from sopo_ray.algorithm import sample_groups
from sopo_ray.config import load_config
from sopo_ray.distributed.group import caption_table
from sopo_ray.distributed.schedule import SchedulePlan
from sopo_ray.models.generator import generator_from_payload
from sopo_ray.models.text_encoder import load_text_cache
from sopo_ray.reward import reward_from_payload


def plain_loop(cfg, art, n_groups: int) -> float:
    """Groups/s of `sample_groups` called in this process, batch by batch (the baseline)."""
    if cfg.torch_threads:
        torch.set_num_threads(cfg.torch_threads)
    load_text_cache(cfg)
    policy = generator_from_payload(art.base_payload).eval()
    reward = reward_from_payload(art.reward_payload).eval()
    table = caption_table(art.train.motion_ids, art.train.captions)
    plan = SchedulePlan.from_config(cfg, len(table))
    batch = cfg.schedule.rollout_batch_size
    sample_groups(policy, reward, art.train.features, art.train.lengths, [table[i] for i in plan.captions(0, 2)],
                  version=0, k=cfg.objective.k, steps=cfg.diffusion.rollout_sample_steps,
                  guidance=cfg.diffusion.guidance_scale, eta=cfg.diffusion.rollout_ddim_eta, run_seed=cfg.seed,
                  keep_best=False)  # warm-up
    start, done = time.perf_counter(), 0
    while done < n_groups:
        refs = [table[i] for i in plan.captions(done, min(batch, n_groups - done))]
        done += len(sample_groups(policy, reward, art.train.features, art.train.lengths, refs, version=0,
                                  k=cfg.objective.k, steps=cfg.diffusion.rollout_sample_steps,
                                  guidance=cfg.diffusion.guidance_scale, eta=cfg.diffusion.rollout_ddim_eta,
                                  run_seed=cfg.seed, keep_best=False))
    return done / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="configs/default.yaml")
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    parser.add_argument("--groups", type=int, default=64, help="groups timed per setting")
    args = parser.parse_args()
    cfg = load_config(args.config, args.overrides)
    console = Console()
    art = artifacts.resolve(cfg, console, need_evaluator=False)
    console.print(f"K={cfg.objective.k}, {cfg.diffusion.rollout_sample_steps} DDIM steps, rollout batch "
                  f"{cfg.schedule.rollout_batch_size}, {args.groups} groups per setting, {os.cpu_count()} CPUs "
                  "(shared machines make these numbers noisy; compare the ratios)")
    base = plain_loop(cfg, art, args.groups)
    ray.init(num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False)
    rows = [("plain loop (this process)", base)]
    for n in (1, 2):
        options = {"num_cpus": min(1.0, (os.cpu_count() or 2) / n)}
        rows.append((f"Ray, {n} rollout actor{'s' if n > 1 else ''}", pool_rate(cfg, art, args.groups, n, options)[0]))
    table = Table(title="rollout throughput")
    table.add_column("setting")
    table.add_column("groups/s", justify="right")
    table.add_column("vs plain loop", justify="right")
    for name, rate in rows:
        table.add_row(name, f"{rate:.2f}", f"{rate / base:.2f}x")
    console.print(table)


if __name__ == "__main__":
    main()
