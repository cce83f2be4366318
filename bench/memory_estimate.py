"""The memory estimate of sopo_ray/memory.py against measured peaks: one rollout batch and one learner step.

    python bench/memory_estimate.py [--config configs/default.yaml] [--k 2 8 32] [--batch 16 64]

Each measurement runs in a fresh process (untrained models of the config's size: memory does not depend on the
weights): it builds the models, runs `sample_groups` (rollout_batch_size x K samples, classifier-free guidance)
or one learner forward + backward (`preference_terms` + the SoPo loss), and reports the growth of its peak resident
memory over the idle process, next to the estimate. Prints a table with the ratio estimate / measured, the idle
resident memory, and the part of it no other process shares (what `memory.PROCESS_BYTES` stands for).
"""

from __future__ import annotations

import argparse
import copy
import json
import resource
import subprocess
import sys

from rich.console import Console
from rich.table import Table

FEATURE_DIM = 263


def _rss() -> int:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * resource.getpagesize()


def _private() -> int:
    """Memory only this process holds (its shared libraries left out): what each extra process of a run adds."""
    with open("/proc/self/smaps_rollup") as fh:
        return sum(int(line.split()[1]) * 1024 for line in fh if line.startswith(("Private_Clean", "Private_Dirty")))


def _peak() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def measure(config: str | None, kind: str, stage: str, size: int, k: int) -> dict:
    """Peak growth (bytes) of one rollout batch (`size` captions x `k`) or one learner step (`size` pairs)."""
    import numpy as np
    import torch

    from sopo_ray import memory
    from sopo_ray.config import load_config
    from sopo_ray.models.generator import build_generator

    torch.set_num_threads(1)
    cfg = load_config(config, [f"model.kind={kind}", f"schedule.rollout_batch_size={size}", f"objective.k={k}",
                               f"schedule.batch_size={size}", "cluster.num_learners=1"])
    frames, stats = cfg.data.max_frames, (np.zeros(FEATURE_DIM, np.float32), np.ones(FEATURE_DIM, np.float32))
    gen = build_generator(cfg, stats).eval()
    rng = np.random.default_rng(0)
    if stage == "rollout":
        from sopo_ray.algorithm import sample_groups
        from sopo_ray.distributed.group import caption_table
        from sopo_ray.reward.tmr import TMRReward

        r = cfg.reward
        reward = TMRReward(*stats, latent_dim=r.latent_dim, num_layers=r.num_layers, num_heads=r.num_heads,
                           frames_per_token=r.frames_per_token).eval()
        features = rng.normal(size=(size, frames, FEATURE_DIM)).astype(np.float32)
        lengths = np.full(size, frames, np.int64)
        table = caption_table([str(i) for i in range(size)], [[f"a person walks forward {i}"] for i in range(size)])
        gen.encode_text([c.text for c in table])
        before, idle_private = _rss(), _private()
        sample_groups(gen, reward, features, lengths, table, version=0, k=k, steps=2,
                      guidance=cfg.diffusion.guidance_scale, eta=cfg.diffusion.rollout_ddim_eta, run_seed=0,
                      keep_best=False)
        estimate = memory.rollout_bytes(cfg)
    else:
        from sopo_ray.algorithm import PolicyErrors, PreferenceBatch, preference_terms, trainable
        from sopo_ray.objectives import objective_loss

        reference = copy.deepcopy(gen).requires_grad_(False)
        trainable(gen)
        x = torch.from_numpy(rng.normal(size=(size, frames, FEATURE_DIM)).astype(np.float32))
        n = torch.full((size,), frames)
        batch = PreferenceBatch(captions=[f"a person walks {i}" for i in range(size)], x_w=x, len_w=n, x_l=x.clone(),
                                len_l=n, reward_l=torch.full((size,), 0.3), sims_w=torch.full((size, k), 0.5),
                                staleness=[0] * size, group_metrics={})
        gen.encode_text(batch.captions)
        before, idle_private = _rss(), _private()
        terms = preference_terms(cfg, PolicyErrors(gen), gen, reference, batch, torch.Generator().manual_seed(0), "cpu")
        objective_loss(cfg.objective, terms, cfg.objective.tau, gen.num_timesteps)[0].backward()
        estimate = memory.learner_bytes(cfg)
    return {"idle": before, "idle_private": idle_private, "measured": _peak() - before, "estimate": estimate}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=None)
    parser.add_argument("--k", type=int, nargs="+", default=[2, 8, 32], help="objective.k of the rollout batches")
    parser.add_argument("--rollout-batch", type=int, default=16, help="captions per rollout batch")
    parser.add_argument("--batch", type=int, nargs="+", default=[16, 64], help="learner pairs per step")
    parser.add_argument("--kinds", nargs="+", default=["mdm", "mld"])
    parser.add_argument("--child", nargs=4, metavar=("KIND", "STAGE", "SIZE", "K"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        kind, stage, size, k = args.child
        print("RESULT " + json.dumps(measure(args.config, kind, stage, int(size), int(k))))
        return

    table = Table(title="memory estimate vs measured peak growth (MiB), one process per row")
    for column in ("model", "stage", "size", "estimate", "measured", "estimate / measured", "idle process",
                   "of it private"):
        table.add_column(column, justify="left" if column in ("model", "stage") else "right")
    cases = [(kind, "rollout", args.rollout_batch, k) for kind in args.kinds for k in args.k]
    cases += [(kind, "learner", b, 2) for kind in args.kinds for b in args.batch]
    for kind, stage, size, k in cases:
        command = [sys.executable, __file__, "--child", kind, stage, str(size), str(k)]
        if args.config:
            command[2:2] = ["--config", args.config]
        out = subprocess.run(command, capture_output=True, text=True, check=True).stdout
        result = json.loads(next(line for line in out.splitlines() if line.startswith("RESULT "))[7:])
        mib = {key: value / (1 << 20) for key, value in result.items()}
        label = f"{size} x K={k}" if stage == "rollout" else f"{size} pairs"
        table.add_row(kind, stage, label, f"{mib['estimate']:.0f}", f"{mib['measured']:.0f}",
                      f"{result['estimate'] / max(result['measured'], 1):.2f}", f"{mib['idle']:.0f}",
                      f"{mib['idle_private']:.0f}")
    Console(width=max(Console().width, 120)).print(table)


if __name__ == "__main__":
    main()
