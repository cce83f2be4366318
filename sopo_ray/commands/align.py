"""`sopo align`: SoPo alignment (or a baseline) as a distributed trainer on Ray; same as `python -m sopo_ray.run`."""

from __future__ import annotations

import argparse

from sopo_ray.run import add_run_args, run


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the `align` subcommand."""
    parser = subparsers.add_parser(
        "align", help="align a base model with SoPo (or sft/offline_dpo/online_dpo) on Ray",
        description="Run the semi-online trainer: rollout pool, replay queue, Ray Train learners; writes "
                    "checkpoints, metrics.jsonl, policy.pt and a report under the run directory.")
    add_run_args(parser)
    parser.set_defaults(func=run)
