"""The `sopo` command. Each subcommand lives in `sopo_ray/commands/<name>.py` with a `register(subparsers)`.

User errors (`SopoError`) print one line, `error: ...`, and exit with status 2.
"""

from __future__ import annotations

import argparse
import importlib
import math
import sys
from collections.abc import Callable, Sequence

from sopo_ray.config import SEED_LIMIT
from sopo_ray.errors import ConfigError, SopoError

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


def check_number(flag: str, value: float | None, *, low: float | None = None, high: float | None = None,
                 example: str) -> None:
    """Refuse a numeric flag that is NaN/inf or outside [low, high] (None: open) with one line naming the flag, the
    allowed range and an example; a flag left at None is not checked."""
    if value is None:
        return
    if math.isfinite(value) and (low is None or value >= low) and (high is None or value <= high):
        return
    def show(x: float) -> str:
        return f"{x:g}" if isinstance(x, float) else str(x)

    allowed = (f"in [{show(low)}, {show(high)}]" if low is not None and high is not None else
               f">= {show(low)}" if low is not None else f"<= {show(high)}")
    raise ConfigError(f"{flag} {value!r} is not allowed: it must be a finite number {allowed}; pass e.g. "
                      f"{flag} {example}")


def check_seed(flag: str, seed: int, count: int = 1) -> None:
    """Refuse a seed flag whose `count` consecutive seeds (seed, seed + 1, ...) leave [0, SEED_LIMIT)."""
    check_number(flag, seed, low=0, high=SEED_LIMIT - count, example="0")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sopo",
        description="SoPo: semi-online preference optimisation for text-to-motion diffusion, on Ray.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def run_reporting_errors(func: Callable[[argparse.Namespace], int | None], args: argparse.Namespace) -> int:
    """`func(args)`'s exit status; a user error (or a path the OS refuses) as one `error: ...` line and status 2,
    Ctrl-C as status 130."""
    try:
        return int(func(args) or 0)
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


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    return run_reporting_errors(args.func, args)


if __name__ == "__main__":
    sys.exit(main())
