"""`python -m sopo_ray.run`: one SoPo (or baseline) alignment run on Ray, end to end.

    python -m sopo_ray.run --config configs/default.yaml [--set key=value ...] [--output-dir DIR]
    python -m sopo_ray.run --resume runs/sopo-default-20260101-120000 [--set schedule.total_steps=600]

Inside `ray job submit` it joins the job's cluster (cluster.address=auto is implied by RAY_ADDRESS); otherwise it
starts a local Ray. `sopo align` is the same command.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from sopo_ray.errors import ConfigError


def add_run_args(parser: argparse.ArgumentParser) -> None:
    """The flags of `python -m sopo_ray.run` and `sopo align`."""
    from sopo_ray.cli import add_config_args

    add_config_args(parser)
    parser.add_argument("--output-dir", default=None, help="run directory (default: runs/<name>-<time>)")
    parser.add_argument("--local", action="store_true",
                        help="run the same schedule in this process without Ray (sopo_ray.local_loop): for "
                             "sweeps and debugging on one machine")
    parser.add_argument("--resume", default=None, metavar="RUN_DIR",
                        help="continue a stopped run from its newest checkpoint (uses RUN_DIR/config.yaml; --set "
                             "still applies, e.g. to extend schedule.total_steps)")
    parser.add_argument("--verbose", action="store_true",
                        help="show Ray's own output on the console (Ray Train's INFO lines, worker prefixes, repeats); "
                             "same as --set log.verbose=true")


def config_overrides(args: argparse.Namespace) -> list[str]:
    """The `--set` overrides, then `log.verbose=true` for `--verbose`."""
    return [*args.overrides, *(["log.verbose=true"] if args.verbose else [])]


def run(args: argparse.Namespace) -> int:
    """Load the config, pick the run directory, and run the driver; returns the exit status."""
    from sopo_ray.config import load_config
    from sopo_ray.distributed.driver import Driver, default_run_dir
    from sopo_ray.distributed.preflight import hold

    if args.resume:
        run_dir = Path(args.resume)
        if args.output_dir:
            raise ConfigError(f"--output-dir cannot be combined with --resume: a resumed run continues in its own "
                              f"directory {run_dir}; drop --output-dir (or drop --resume to start a new run there)")
        if args.config:
            raise ConfigError("--resume uses the run's own config.yaml; drop --config (use --set to change keys)")
        if not (run_dir / "config.yaml").is_file():
            raise ConfigError(f"--resume {run_dir}: no config.yaml there; pass the directory of an earlier run "
                              "(runs/<name>-<time>)")
        cfg = load_config(run_dir / "config.yaml", config_overrides(args))
        if cfg.output_dir is not None and Path(cfg.output_dir).resolve() != run_dir.resolve():
            raise ConfigError(f"--resume {run_dir} continues in its own directory, not output_dir={cfg.output_dir}; "
                              "drop the output_dir override")
    else:
        cfg = load_config(args.config, config_overrides(args))
        run_dir = Path(args.output_dir or cfg.output_dir or default_run_dir(cfg))
    if os.environ.get("RAY_JOB_ID") and not run_dir.is_absolute():
        print(f"warning: inside a Ray job the run directory {run_dir} lies in the job's temporary working dir; "
              "pass --output-dir /shared/path to keep checkpoints and metrics", file=sys.stderr)
    with hold(run_dir):
        if args.local:
            from sopo_ray.local_loop import align_local

            return align_local(cfg, run_dir, resume=bool(args.resume))
        return Driver(cfg, run_dir, resume=bool(args.resume)).run()


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of `python -m sopo_ray.run`."""
    from sopo_ray.cli import run_reporting_errors

    parser = argparse.ArgumentParser(prog="python -m sopo_ray.run", description=__doc__.split("\n\n")[0])
    add_run_args(parser)
    return run_reporting_errors(run, parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
