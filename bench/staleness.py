"""Staleness as a measured knob: the real trainer at several `schedule.max_staleness` values, in one Ray session.

    python bench/staleness.py [--config configs/default.yaml] [--values 0 1 2 4] [--steps 100] [--workers 2]
                              [--repeats 1] [--set key=value ...] [--output-dir DIR]

Each value runs the full semi-online pipeline (`Driver`: WeightStore, ReplayQueue, rollout workers, Ray Train
learner) of the config for `--steps` learner steps with `--workers` rollout workers, no final evaluation and no
live view, each in its own run directory (temporary unless `--output-dir`; keep them to draw `sopo report DIR`).
Ray is started once and every run reuses it, so only the schedule differs between rows.

From each run's metrics.jsonl it prints, per value:
- wall s / 100 steps: driver-side time from the first to the last learner step record (start-up excluded);
- learner idle: the learner's time waiting on the replay queue over its step time, same steps; and the mean wait
  at the first step of a sync window vs inside one (max_staleness 0 makes rollout of a window wait for its
  version, so the learner waits at every window start);
- rollout idle: the rollout workers' time without a ticket over the same span (estimated from the cumulative
  fractions in the pipeline records), and in brackets the part blocked by a full queue (rollout_ahead binds);
  waiting for a version (max_staleness binds) is the rest, mostly claims that wait under a second;
- staleness: mean and max versions behind the learner of the trained pairs, and groups dropped as stale;
- quality without a held-out evaluation: mean reward of the trained groups and the fraction with r(x^l) < tau
  over the last quarter of the steps (noisy; `sopo evaluate` or final_eval is the real measure);
and the ratios of wall time and learner idle to the first value (max_staleness 0 by default).

CPUs: one learner plus N rollout workers must fit Ray's CPU count, so the bench gives the learner one CPU and each
rollout worker (num_cpus - 1) / N (0.5 each with 2 workers on 2 CPUs). These are Ray's reservations only: every
actor still runs one torch thread, so 3 busy processes share 2 cores when both sides work. Shared machines make
the timings noisy; compare the ratios within one run.
"""

from __future__ import annotations

import argparse
import gc
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from harness import local_ray
from rich.console import Console
from rich.table import Table

from sopo_ray.config import load_config
from sopo_ray.distributed.cluster import OFFLINE_ENV
from sopo_ray.distributed.driver import Driver
from sopo_ray.tracking import read_metrics


def rollout_idle(pipeline: list[dict[str, Any]], t1: float, t2: float) -> dict[str, float | None]:
    """Rollout idle fraction between driver times t1 and t2 (all reasons, and `queue_full`), start-up excluded.

    Pipeline records carry each reason's idle time over the workers' whole life, as a fraction; a worker's life
    starts about when it first reports (the first record with workers), so seconds idle at time t are about
    fraction(t) * (t - t0), and the window's fraction is the difference of two such estimates over t2 - t1.
    """
    live = [r for r in pipeline if r.get("rollout/workers") and not r.get("final")]
    if not live:
        return {"rollout_idle": None, "rollout_full": None}
    t0 = live[0]["time"]
    window = [r for r in live if t1 <= r["time"] <= t2] or live[-1:]
    first, last = window[0], window[-1]
    span = last["time"] - first["time"]
    out: dict[str, float | None] = {}
    for name, key in (("rollout_idle", "health/rollout_idle_frac"),
                      ("rollout_full", "health/rollout_idle_queue_full_frac")):
        if span <= 0:
            out[name] = last.get(key)
            continue
        seconds = [(r.get(key) or 0.0) * (r["time"] - t0) for r in (first, last)]
        out[name] = min(1.0, max(0.0, (seconds[1] - seconds[0]) / span))   # the estimate can overshoot a little
    return out


def summarize(metrics_path: Path, sync_interval: int) -> dict[str, Any]:
    """The bench's row of one run, from its metrics.jsonl (`sync_interval`: learner steps per policy version)."""
    records = list(read_metrics(metrics_path))
    steps = sorted((r for r in records if r.get("event") == "step"), key=lambda r: r["step"])
    pipeline = [r for r in records if r.get("event") == "pipeline"]
    if len(steps) < 2:
        raise RuntimeError(f"{metrics_path}: fewer than 2 learner steps were logged; see the run's driver.log")
    timed = steps[1:]   # step 1's wait includes the pipeline filling up
    wait = sum(r.get("timing/wait_s", 0.0) for r in timed)
    busy = sum(v for r in timed for k, v in r.items() if k.startswith("timing/") and k != "timing/wait_s")
    span = timed[-1]["time"] - steps[0]["time"]
    window_start = [r.get("timing/wait_s", 0.0) for r in timed if (r["step"] - 1) % sync_interval == 0]
    inside = [r.get("timing/wait_s", 0.0) for r in timed if (r["step"] - 1) % sync_interval != 0]
    stale = np.concatenate([np.asarray(r.get("health/staleness") or [], dtype=float) for r in steps])
    last = pipeline[-1] if pipeline else {}
    tail = steps[-max(1, len(steps) // 4):]
    return {
        **rollout_idle(pipeline, steps[0]["time"], timed[-1]["time"]),
        "steps": steps[-1]["step"],
        "first_step_s": steps[0]["time"],
        "wall_per_100": 100.0 * span / (timed[-1]["step"] - steps[0]["step"]),
        "learner_idle": wait / max(wait + busy, 1e-9),
        "wait_window_start": float(np.mean(window_start)) if window_start else float("nan"),
        "wait_inside": float(np.mean(inside)) if inside else float("nan"),
        "stale_mean": float(stale.mean()) if stale.size else float("nan"),
        "stale_max": int(stale.max()) if stale.size else 0,
        "dropped_stale": last.get("queue/dropped_stale", 0),
        "generated": last.get("queue/generated", 0),
        "reward_mean": float(np.mean([r["reward/mean"] for r in tail if r.get("reward/mean") is not None])),
        "below_tau": float(np.mean([r["loss/frac_below_tau"] for r in tail
                                    if r.get("loss/frac_below_tau") is not None])),
    }


def run_one(args: argparse.Namespace, value: int, root: Path) -> dict[str, Any]:
    """One training run at max_staleness `value`; its summary row."""
    rollout_cpus = (args.num_cpus - 1) / args.workers
    overrides = [f"schedule.max_staleness={value}", f"cluster.num_rollout_workers={args.workers}",
                 f"schedule.total_steps={args.steps}", "log.final_eval=false", "log.live_view=false",
                 f"cluster.num_cpus={args.num_cpus}", "cluster.learner_cpus=1", f"cluster.rollout_cpus={rollout_cpus}",
                 *args.overrides]
    cfg = load_config(args.config, overrides)
    run_dir = root / f"staleness-{value}"
    if run_dir.exists():
        shutil.rmtree(run_dir)
    run_dir.mkdir(parents=True)
    with open(run_dir / "driver.log", "w") as log:
        status = Driver(cfg, run_dir, console=Console(file=log, width=120)).run()
    gc.collect()   # drop the run's actor handles and object refs before the next run
    if status != 0:
        raise RuntimeError(f"max_staleness={value}: the run exited with {status}; see {run_dir / 'driver.log'}")
    return {"value": value, "run_dir": run_dir, **summarize(run_dir / "metrics.jsonl", cfg.schedule.sync_interval)}


def median_row(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """One row per value: the median of each number over repeated runs, and the range of the wall time."""
    out = dict(rows[0])
    for key, value in rows[0].items():
        if isinstance(value, int | float) and key != "value" and all(r[key] is not None for r in rows):
            out[key] = float(np.median([r[key] for r in rows]))
    walls = [r["wall_per_100"] for r in rows]
    out["wall_range"] = (min(walls), max(walls))
    return out


def _ratio(value: float | None, base: float | None) -> str:
    if value is None or base is None or base <= 0:
        return "-"
    return f"{value / base:.2f}x"


def render(rows: list[dict[str, Any]], title: str) -> Table:
    """The results table, ratios against the first row."""
    table = Table(title=title)
    for name in ("max staleness", "wall s / 100 steps", "vs first", "learner idle", "vs first",
                 "learner wait s (window start / inside)", "rollout idle (queue full)", "staleness mean / max",
                 "dropped stale / generated", "reward (last 1/4)", "r(x^l)<tau (last 1/4)", "first step at s"):
        table.add_column(name, justify="right")
    base = rows[0]
    for r in rows:
        rollout_idle = "-" if r["rollout_idle"] is None else \
            f"{r['rollout_idle']:.2f} ({r['rollout_full']:.2f})"
        low, high = r["wall_range"]
        wall = f"{r['wall_per_100']:.1f}" + (f" ({low:.0f}-{high:.0f})" if high > low else "")
        table.add_row(str(r["value"]), wall, _ratio(r["wall_per_100"], base["wall_per_100"]),
                      f"{r['learner_idle']:.2f}", _ratio(r["learner_idle"], base["learner_idle"]),
                      f"{r['wait_window_start']:.2f} / {r['wait_inside']:.2f}", rollout_idle,
                      f"{r['stale_mean']:.2f} / {r['stale_max']:.0f}",
                      f"{r['dropped_stale']:.0f} / {r['generated']:.0f}",
                      f"{r['reward_mean']:.3f}", f"{r['below_tau']:.3f}", f"{r['first_step_s']:.0f}")
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="configs/default.yaml")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="extra override for every run, e.g. --set schedule.rollout_ahead=10")
    parser.add_argument("--values", type=int, nargs="+", default=[0, 1, 2, 4], help="max_staleness values")
    parser.add_argument("--steps", type=int, default=100, help="learner steps per run")
    parser.add_argument("--workers", type=int, default=2, help="rollout workers")
    parser.add_argument("--num-cpus", type=int, default=os.cpu_count() or 2, help="CPUs Ray may schedule")
    parser.add_argument("--repeats", type=int, default=1,
                        help="rounds over all values (interleaved, so load drift hits every value); medians shown")
    parser.add_argument("--output-dir", type=Path, default=None, help="keep the run directories here")
    args = parser.parse_args()
    if args.repeats < 1:
        parser.error("--repeats must be >= 1")
    if args.num_cpus < 2:
        parser.error("--num-cpus must be >= 2 (one for the learner, the rest shared by the rollout workers)")
    console = Console() if sys.stdout.isatty() else Console(width=220)
    os.environ.update(OFFLINE_ENV)
    local_ray(args.num_cpus)
    root = args.output_dir or Path(tempfile.mkdtemp(prefix="sopo-staleness-"))
    console.print(f"{len(args.values)} runs x {args.steps} learner steps, {args.workers} rollout workers, "
                  f"{args.num_cpus} Ray CPUs ({os.cpu_count()} cores), load {os.getloadavg()[0]:.1f}; "
                  f"run directories under {root}")
    runs: dict[int, list[dict[str, Any]]] = {value: [] for value in args.values}
    start = time.time()
    try:
        for round_ in range(args.repeats):
            for value in args.values:
                t0 = time.time()
                runs[value].append(run_one(args, value, root / f"round-{round_}"))
                console.print(f"round {round_ + 1}/{args.repeats}, max_staleness={value}: {time.time() - t0:.0f} s "
                              f"(load {os.getloadavg()[0]:.1f})")
    finally:
        if args.output_dir is None:
            shutil.rmtree(root, ignore_errors=True)
    rows = [median_row(runs[value]) for value in args.values]
    title = (f"{args.config} + {' '.join(args.overrides) or 'no overrides'}: {args.steps} steps, {args.workers} "
             f"rollout workers, {args.num_cpus} CPUs, median of {args.repeats} round(s); ratios vs max_staleness "
             f"{rows[0]['value']}")
    console.print(render(rows, title))
    console.print(f"total {time.time() - start:.0f} s, load at the end {os.getloadavg()[0]:.1f} (shared machines: "
                  "timings are noisy, compare ratios within one run)")


if __name__ == "__main__":
    main()
