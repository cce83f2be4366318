"""The `sopo` command. Each subcommand lives in `sopo_ray/commands/<name>.py` with a `register(subparsers)`.

User errors (`SopoError`) print one line, `error: ...`, and exit with status 2.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from sopo_ray.errors import SopoError

# Subcommand modules, in the order `sopo --help` lists them.
COMMAND_MODULES: list[str] = [
    "sopo_ray.commands.data",
    "sopo_ray.commands.pretrain",
    "sopo_ray.commands.align",
    "sopo_ray.commands.generate",
    "sopo_ray.commands.reward",
    "sopo_ray.commands.evaluate",
    "sopo_ray.commands.render",
    "sopo_ray.commands.toy",
    "sopo_ray.commands.experiment",
    "sopo_ray.commands.report",
]


def add_config_args(parser: argparse.ArgumentParser) -> None:
    """The two config flags every command that reads a Config takes."""
    parser.add_argument("--config", default=None, help="YAML config file (e.g. configs/default.yaml)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config key, e.g. --set schedule.total_steps=100 (repeatable)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sopo",
        description="SoPo: semi-online preference optimisation for text-to-motion diffusion, on Ray.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    try:
        return int(args.func(args) or 0)
    except SopoError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        where = f" ({exc.filename})" if getattr(exc, "filename", None) else ""
        print(f"error: {exc.strerror or exc}{where}; check the path and its permissions", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
