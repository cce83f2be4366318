"""`sopo pretrain`: train the base text-to-motion diffusion model (MDM- or MLD-style) on the configured data."""

from __future__ import annotations

import argparse
from pathlib import Path

from sopo_ray.cli import add_config_args
from sopo_ray.config import load_config
from sopo_ray.paths import check_data_root, check_output_dir


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the `pretrain` subcommand."""
    parser = subparsers.add_parser(
        "pretrain", help="train the base diffusion model (MDM or MLD) on the dataset",
        description="Pretrain the base model of the config (model.kind) on the train split. Resumes from "
                    "OUT/last.pt; writes OUT/base.pt and OUT/metrics.jsonl. With pretrained.mdm set, import that "
                    "released MDM instead (no training) and print where it was written.")
    add_config_args(parser)
    parser.add_argument("--out", default=None, help="output folder (default: {workdir}/base/{model.kind})")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Pretrain and print the path of the base checkpoint."""
    from sopo_ray.artifacts import base_path, build_base
    from sopo_ray.models.pretrain import base_dir, pretrain

    cfg = load_config(args.config, args.overrides)
    if cfg.pretrained.mdm is not None:
        target = base_path(cfg) if args.out is None else check_output_dir(Path(args.out), "--out") / base_path(cfg).name
        path = target if target.is_file() else build_base(cfg, target)
    else:
        out = check_output_dir(Path(args.out) if args.out else base_dir(cfg), "--out")
        check_data_root(cfg.data)
        path = pretrain(cfg, out)
    print(path)
    return 0
