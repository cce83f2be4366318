"""`sopo report RUN_DIR`: turn a run's metrics.jsonl into a PNG dashboard of the pipeline's health.

Six panels against the learner step: rewards of trained groups, loss and the fraction below tau, staleness of
trained pairs, learner/rollout idle fractions, replay-queue depth, groups/s in and out (docs/architecture.md,
"Reading the dashboard").
"""

from __future__ import annotations

import argparse
from pathlib import Path

from sopo_ray.errors import DataError
from sopo_ray.paths import check_output_file


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the `report` subcommand."""
    parser = subparsers.add_parser("report", help="draw a run's metrics as a PNG dashboard (reward, loss, "
                                                  "staleness, idle fractions, queue depth, groups/s)")
    parser.add_argument("run_dir", type=Path, help="a run directory written by python -m sopo_ray.run")
    parser.add_argument("--out", type=Path, default=None, help="PNG path (default RUN_DIR/dashboard.png)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Draw the dashboard and print where it went."""
    from sopo_ray.distributed.dashboard import plot_dashboard

    metrics = args.run_dir / "metrics.jsonl"
    if not metrics.is_file():
        raise DataError(f"{metrics} not found; pass a run directory written by python -m sopo_ray.run "
                        "(it holds metrics.jsonl)")
    out = plot_dashboard(metrics, check_output_file(args.out or args.run_dir / "dashboard.png", "--out"))
    print(f"wrote {out}")
    return 0
