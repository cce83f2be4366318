"""`sopo toy`: the paper's 2-D illustration: offline DPO vs online DPO vs SoPo from one reference, same budget."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from sopo_ray.cli import check_seed
from sopo_ray.errors import ConfigError
from sopo_ray.paths import check_output_dir

# torch and the toy are imported inside `run`, so `sopo --help` and other commands stay fast.
DEFAULT_STEPS = 300


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the `toy` subcommand."""
    parser = subparsers.add_parser(
        "toy", help="2-D toy: offline vs online DPO vs SoPo (writes toy.png and toy.json, < 1 min on CPU)",
        description="Train a tiny 2-D diffusion policy toward a two-mode preference with offline DPO, online DPO "
                    "and SoPo (same reference, same budget); write a figure and the metrics.")
    parser.add_argument("--out", type=Path, default=Path("runs/toy"), help="output folder (default runs/toy)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the world, reference and runs (default 0)")
    parser.add_argument("--repeats", type=int, default=1,
                        help="run seeds seed..seed+N-1 and average them in toy.json; the figure shows the first")
    parser.add_argument("--steps", type=int, default=DEFAULT_STEPS,
                        help=f"alignment steps per method (default {DEFAULT_STEPS})")
    parser.add_argument("--reward", choices=["learned", "exact"], default="learned",
                        help="reward model: a learned classifier (imperfect, default) or the true preference")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run the toy and write `toy.png` and `toy.json` under `args.out`."""
    if args.repeats < 1:
        raise ConfigError(f"--repeats must be >= 1, got {args.repeats}")
    check_seed("--seed", args.seed, args.repeats)
    check_output_dir(args.out, "--out")
    import torch
    from pydantic import ValidationError

    from sopo_ray.toy.align import run_toy, summarize
    from sopo_ray.toy.world import METHODS, ToySettings

    try:
        settings = [ToySettings(seed=args.seed + i, steps=args.steps, reward=args.reward)
                    for i in range(args.repeats)]
    except ValidationError as err:
        raise ConfigError(f"bad toy setting: {err.errors()[0]['msg'].removeprefix('Value error, ')}") from None
    torch.set_num_threads(1)
    console = Console()
    results = []
    for s in settings:
        start = time.perf_counter()
        results.append(run_toy(s))
        console.print(f"seed {s.seed}: done in {time.perf_counter() - start:.1f} s")
    from sopo_ray.toy.plot import plot_toy  # matplotlib only when a figure is written

    args.out.mkdir(parents=True, exist_ok=True)
    figure = plot_toy(results[0], args.out / "toy.png")
    summary = summarize(results)
    (args.out / "toy.json").write_text(json.dumps(summary, indent=1) + "\n")

    table = Table(title=f"2-D toy, mean over seeds {summary['seeds']} ({args.reward} reward)")
    for column in ("method", "preference", "modes", "spread", "low-pref", "reward"):
        table.add_column(column, justify="left" if column == "method" else "right")
    for key in ("reference", *METHODS):
        m = summary["mean"][key]
        table.add_row(key, f"{m['mean_true_preference']:.3f}", f"{m['modes_covered']:.2f}", f"{m['spread']:.2f}",
                      f"{m['frac_low_preference']:.3f}", f"{m['mean_reward']:.3f}")
    console.print(table)
    console.print(f"wrote {figure} and {args.out / 'toy.json'}")
    return 0
