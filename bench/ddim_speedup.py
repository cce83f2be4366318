"""DDIM-50 vs full ancestral (DDPM) sampling of the base generator, measured in one run.

    python bench/ddim_speedup.py [--config configs/default.yaml] [--timesteps 1000] [--batch 4] [--frames 120]

Builds the config's generator with a T-step schedule (1000 by default, as MDM trains; the speed-up does not depend
on the weights, so an untrained model is timed unless --checkpoint is given), samples the same captions and seeds
with both samplers (classifier-free guidance on), and prints wall times and the speed-up. Timings on a shared
machine are noisy; the ratio is what matters.
"""

from __future__ import annotations

import argparse
import time

import torch
from harness import random_condition
from rich.console import Console
from rich.table import Table

from sopo_ray.config import load_config, model_config
from sopo_ray.models.generator import build_generator, load_generator


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=None)
    parser.add_argument("--checkpoint", default=None, help="time a trained generator (its own T) instead")
    parser.add_argument("--timesteps", type=int, default=1000, help="training diffusion steps T (ancestral cost)")
    parser.add_argument("--ddim-steps", type=int, default=50)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--frames", type=int, default=120)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: the config's)")
    args = parser.parse_args()

    cfg = load_config(args.config, [f"diffusion.num_timesteps={args.timesteps}",
                                    f"data.max_frames={max(args.frames, 1)}", "data.min_frames=1"])
    threads = args.threads or cfg.torch_threads
    if threads:
        torch.set_num_threads(threads)
    text_cfg = cfg
    if args.checkpoint:
        gen, config = load_generator(args.checkpoint)
        text_cfg = model_config(config)
    else:
        gen = build_generator(cfg, (torch.zeros(263), torch.ones(263))).eval()
    text = random_condition(text_cfg, args.batch)
    lengths = [args.frames] * args.batch
    seeds = list(range(args.batch))
    gen.sample(text, lengths, seeds, steps=2, guidance=2.5)  # warm-up

    def timed(**kwargs: object) -> float:
        start = time.perf_counter()
        gen.sample(text, lengths, seeds, guidance=2.5, **kwargs)
        return time.perf_counter() - start

    # DDIM is timed before and after the long ancestral run and averaged, so a change in machine load during
    # the run affects both sides alike.
    ddim_before = timed(steps=args.ddim_steps)
    ancestral = timed(ancestral=True)
    timings = {"ddim": (ddim_before + timed(steps=args.ddim_steps)) / 2, "ancestral": ancestral}

    table = Table(title=f"{gen.kind} sampling, batch {args.batch} x {args.frames} frames, CFG 2.5, "
                        f"torch threads {torch.get_num_threads()}")
    table.add_column("sampler")
    table.add_column("denoiser steps", justify="right")
    table.add_column("wall s", justify="right")
    table.add_column("ms / step", justify="right")
    ddim_steps = min(args.ddim_steps, gen.num_timesteps)
    for name, steps in (("DDIM", ddim_steps), ("ancestral (DDPM)", gen.num_timesteps)):
        wall = timings["ddim" if name == "DDIM" else "ancestral"]
        table.add_row(name, str(steps), f"{wall:.2f}", f"{1000 * wall / steps:.1f}")
    console = Console()
    console.print(table)
    speedup = timings["ancestral"] / timings["ddim"]
    console.print(f"DDIM-{ddim_steps} speed-up over full ancestral T={gen.num_timesteps}: "
                  f"[bold]{speedup:.1f}x[/bold] (ideal {gen.num_timesteps / ddim_steps:.0f}x)")


if __name__ == "__main__":
    main()
