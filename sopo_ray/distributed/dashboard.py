"""The pipeline dashboard (dashboard.png) of a run, drawn from its metrics.jsonl (`sopo report RUN_DIR`, and at
the end of every run with a final evaluation); how to read it: docs/architecture.md, "Reading the dashboard"."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from sopo_ray.plotting import by_step, pyplot, save, series, smooth
from sopo_ray.tracking import read_metrics


def plot_dashboard(metrics_path: Path, out_png: Path) -> Path:
    """Six panels against the learner step: rewards, loss, staleness of trained pairs, idle fractions,
    queue depth, and groups/s in and out. Resumed runs keep the newest record of each step."""
    plt = pyplot()
    records = list(read_metrics(metrics_path))
    step_records = by_step(records)
    pipeline = [r for r in records if r.get("event") == "pipeline"]
    fig, axes = plt.subplots(2, 3, figsize=(15, 8))
    ax = axes[0, 0]
    for key, label in (("reward/best", "best of K"), ("reward/mean", "mean of K"), ("reward/x_l", "x^l (worst)")):
        x, y = series(step_records, key)
        ax.plot(x, smooth(y), label=label)
    ax.set_title("reward of trained groups (r in [0, 1])")
    ax.legend()
    ax = axes[0, 1]
    x, y = series(step_records, "loss/loss")
    ax.plot(x, y, alpha=0.3, color="C0")
    ax.plot(x, smooth(y), color="C0", label="loss")
    x, y = series(step_records, "loss/frac_below_tau")
    if len(y):
        twin = ax.twinx()
        twin.plot(x, smooth(y), color="C3", label="frac r(x^l)<tau")
        twin.set_ylim(0, 1)
        twin.legend(loc="upper right")
    ax.set_title("loss (and fraction of groups below tau)")
    ax.legend(loc="upper left")
    ax = axes[0, 2]
    stale = [s for r in step_records for s in (r.get("health/staleness") or [])]
    if stale:
        values, counts = np.unique(stale, return_counts=True)
        ax.bar(values, counts / counts.sum())
        ax.set_xticks(values)
    ax.set_title("staleness of trained pairs (fraction)")
    ax.set_xlabel("versions behind the learner")
    ax = axes[1, 0]
    x, y = series(step_records, "health/learner_idle_frac")
    ax.plot(x, smooth(y), label="learner (waiting on queue)")
    x, y = series(pipeline, "health/rollout_idle_frac")
    ax.plot(x, y, label="rollout (back-pressure)")
    ax.set_ylim(0, 1)
    ax.set_title("idle fractions")
    ax.legend()
    ax = axes[1, 1]
    for key, label in (("queue/size", "queued"), ("queue/inflight", "in flight"), ("queue/capacity", "capacity")):
        x, y = series(pipeline, key)
        ax.plot(x, y, label=label, linestyle="--" if key == "queue/capacity" else "-")
    ax.set_title("replay queue depth (groups)")
    ax.legend()
    ax = axes[1, 2]
    for key, label in (("queue/in_per_s", "generated"), ("queue/out_per_s", "trained")):
        x, y = series(pipeline, key)
        ax.plot(x, y, label=label)
    ax.set_title("groups / s")
    ax.legend()
    for a in axes.flat:
        if a is not axes[0, 2]:
            a.set_xlabel("learner step")
        a.grid(alpha=0.3)
    return save(fig, out_png)
