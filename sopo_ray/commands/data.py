"""`sopo data build` and `sopo data show`: build the synthetic dataset (or check a real one) and look at it."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from sopo_ray.cli import add_config_args, check_seed
from sopo_ray.config import Config, load_config, with_overrides
from sopo_ray.errors import DataError
from sopo_ray.paths import check_data_root, check_output_file


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the `data` subcommand with its `build` and `show` actions."""
    parser = subparsers.add_parser(
        "data", help="build or inspect the dataset",
        description="Build the embedded synthetic dataset, or render samples of any dataset.")
    actions = parser.add_subparsers(dest="data_command", metavar="ACTION", required=True)

    build = actions.add_parser(
        "build", help="build the synthetic dataset into data.root (or check a real dataset folder)",
        description="Generate data.size procedural motions with captions, split them by parameter combination, "
                    "and write train/val/test Parquet files, mean.npy/std.npy and meta.json to data.root. "
                    "For data.source humanml3d/kitml, load every split and report its size.")
    add_config_args(build)
    build.add_argument("--size", type=int, default=None, help="number of motions (overrides data.size)")
    build.set_defaults(func=run_build)

    show = actions.add_parser(
        "show", help="render a few samples with their captions to a GIF (or a PNG filmstrip)",
        description="Render samples of one split side by side with their first caption. The output format "
                    "follows --out: .gif (animated) or .png (filmstrip).")
    add_config_args(show)
    show.add_argument("--split", default="train", choices=("train", "val", "test", "compositional"), help="which split")
    show.add_argument("--num", type=int, default=4, help="how many samples")
    show.add_argument("--seed", type=int, default=None, help="pick random samples with this seed (default: the first)")
    show.add_argument("--out", required=True, help="output file, .gif or .png")
    show.set_defaults(func=run_show)


def _config(args: argparse.Namespace) -> Config:
    cfg = load_config(args.config, args.overrides)
    if getattr(args, "size", None) is not None:
        cfg = with_overrides(cfg, [f"data.size={args.size}"])
    return cfg


def run_build(args: argparse.Namespace) -> int:
    """Build (synthetic) or check (real) the dataset and print a summary table."""
    from rich.console import Console
    from rich.table import Table

    from sopo_ray.data import load_dataset
    from sopo_ray.data.dataset import REAL_SPLITS, SPLITS, read_meta
    from sopo_ray.data.synthetic.build import build_synthetic

    cfg = _config(args)
    check_data_root(cfg.data)
    console = Console()
    table = Table(title=f"dataset {cfg.data.source} at {cfg.data.root}")
    for column in ("split", "motions", "captions", "frames (mean)"):
        table.add_column(column, justify="right" if column != "split" else "left")
    started = time.perf_counter()
    if cfg.data.source == "synthetic":
        build_synthetic(cfg.data)
    for split in SPLITS if cfg.data.source == "synthetic" else REAL_SPLITS:
        data = load_dataset(cfg.data, split)
        table.add_row(split, str(len(data)), str(sum(len(c) for c in data.captions)),
                      f"{data.lengths.mean():.1f}" if len(data) else "-")
    console.print(table)
    console.print(f"data_id {data.data_id}  ({time.perf_counter() - started:.1f} s)")
    if cfg.data.source == "synthetic":
        meta = read_meta(Path(cfg.data.root))
        console.print(f"compositional split: held-out combinations {', '.join(meta['held_out_combos'])}; orders: "
                      f"{', '.join(' then '.join(p) for p in meta['held_out_orders'])}")
    return 0


def run_show(args: argparse.Namespace) -> int:
    """Render samples of a split and print their captions (and oracle scores for synthetic data)."""
    from rich.console import Console
    from rich.table import Table

    from sopo_ray.data import load_dataset
    from sopo_ray.data.synthetic.oracle import oracle_score
    from sopo_ray.motion.features import features_to_joints
    from sopo_ray.motion.render import render_filmstrip, render_gif

    out = Path(args.out)
    if out.suffix.lower() not in (".gif", ".png"):
        raise DataError(f"--out must end in .gif or .png, got {out}")
    if args.num < 1:
        raise DataError(f"--num must be at least 1, got {args.num}")
    if args.seed is not None:
        check_seed("--seed", args.seed)
    check_output_file(out, "--out")
    cfg = _config(args)
    data = load_dataset(cfg.data, args.split)
    count = min(args.num, len(data))
    if args.seed is None:
        picks = list(range(count))
    else:
        picks = sorted(np.random.default_rng(args.seed).choice(len(data), size=count, replace=False).tolist())
    joints = [features_to_joints(data.features[i, :data.lengths[i]]) for i in picks]
    captions = [data.captions[i][0] for i in picks]
    table = Table(title=f"{args.split} samples")
    for column in ("motion", "frames", "captions", "oracle"):
        table.add_column(column)
    for i, motion in zip(picks, joints, strict=True):
        score = "-" if data.params is None else f"{oracle_score(motion, data.params[i]).score:.2f}"
        table.add_row(data.motion_ids[i], str(int(data.lengths[i])), "\n".join(data.captions[i]), score)
    Console().print(table)
    if out.suffix.lower() == ".gif":
        render_gif(joints, captions, out)
    else:
        render_filmstrip(joints, captions, out)
    print(out)
    return 0
