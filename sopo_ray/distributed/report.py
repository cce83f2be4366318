"""After a run: evaluate the aligned policy against the base, write report.json / report.md, and draw the
pipeline dashboard (dashboard.png) from the run's metrics.jsonl.

The two evaluations run as two Ray tasks on the driver's node (one CPU each), with one seed, so both models see
the same held-out captions, lengths and initial noises; differences are the aligned model's doing.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import ray
from rich.console import Console

from sopo_ray.config import Config
from sopo_ray.console import print_table
from sopo_ray.distributed.summary import results_table
from sopo_ray.tracking import read_metrics


def _evaluate(cfg: Config, checkpoint: str, evaluator_path: str, reward_path: str, seed: int) -> dict[str, Any]:
    """The evaluation protocol's table for one generator checkpoint (runs inside a Ray task)."""
    import torch

    from sopo_ray.data.store import load_dataset
    from sopo_ray.evaluation.evaluator import load_evaluator
    from sopo_ray.evaluation.protocol import evaluate_generator
    from sopo_ray.models.generator import load_generator
    from sopo_ray.reward.tmr import load_reward

    if cfg.torch_threads:
        torch.set_num_threads(cfg.torch_threads)
    test = load_dataset(cfg.data, "test")
    generator, _ = load_generator(checkpoint, test.data_id)
    evaluator = load_evaluator(evaluator_path, test.data_id)
    reward = load_reward(reward_path, test.data_id)
    return evaluate_generator(generator, evaluator, reward, test, cfg, seed)


def evaluate_and_report(cfg: Config, art: Any, policy_path: Path, run_dir: Path, console: Console) -> dict[str, Any]:
    """Evaluate base and aligned on the test split, print and write the comparison, draw the dashboard."""
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    from sopo_ray.commands.evaluate import HEADERS, format_cell
    from sopo_ray.evaluation.protocol import COLUMNS

    console.print(f"[bold]final evaluation[/]: base vs aligned on the test split ({cfg.evaluator.replications} "
                  f"replications x {cfg.evaluator.num_captions} captions, {cfg.diffusion.sample_steps} DDIM steps)")
    here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=False)
    task = ray.remote(_evaluate).options(num_cpus=1, scheduling_strategy=here)
    paths = {"base": art.base_path, "aligned": policy_path}
    refs = {name: task.remote(cfg, str(Path(p).resolve()), str(Path(art.evaluator_path).resolve()),
                              str(Path(art.reward_path).resolve()), cfg.seed) for name, p in paths.items()}
    rows = {name: ray.get(ref) for name, ref in refs.items()}
    deltas = {k: rows["aligned"][k][0] - rows["base"][k][0] for k in COLUMNS if k in rows["base"]}

    print_table(console, results_table(rows, f"test split, mean ± 95% CI over {cfg.evaluator.replications} "
                                             f"replications (seed {cfg.seed})"))

    report = {"objective": cfg.objective.name, "steps": cfg.schedule.total_steps, "seed": cfg.seed,
              "checkpoints": {k: str(v) for k, v in paths.items()},
              "rows": {n: {k: {"mean": v[0], "ci95": v[1]} for k, v in r.items()} for n, r in rows.items()},
              "delta": deltas}
    (run_dir / "report.json").write_text(json.dumps(report, indent=2))
    lines = [f"# {cfg.name}: {cfg.objective.name}, {cfg.schedule.total_steps} steps", "",
             "| model | " + " | ".join(HEADERS[k] for k in COLUMNS) + " |",
             "|---|" + "---|" * len(COLUMNS)]
    for name, row in rows.items():
        lines.append(f"| {name} | " + " | ".join(format_cell(row.get(k)) for k in COLUMNS) + " |")
    lines.append("| Δ aligned-base | " + " | ".join(f"{deltas[k]:+.3f}" if k in deltas else "-" for k in COLUMNS)
                 + " |")
    lines += ["", "![pipeline dashboard](dashboard.png)", ""]
    (run_dir / "report.md").write_text("\n".join(lines))
    plot_dashboard(run_dir / "metrics.jsonl", run_dir / "dashboard.png")
    return report


def _series(records: list[dict[str, Any]], key: str) -> tuple[np.ndarray, np.ndarray]:
    pairs = [(r["step"], r[key]) for r in records if isinstance(r.get(key), int | float) and r[key] is not None]
    if not pairs:
        return np.zeros(0), np.zeros(0)
    steps, values = zip(*pairs, strict=True)
    return np.asarray(steps, dtype=float), np.asarray(values, dtype=float)


def _smooth(values: np.ndarray, window: int = 10) -> np.ndarray:
    if len(values) < window:
        return values
    kernel = np.ones(window) / window
    padded = np.concatenate([np.full(window - 1, values[0]), values])
    return np.convolve(padded, kernel, mode="valid")


def plot_dashboard(metrics_path: Path, out_png: Path) -> Path:
    """Six panels against the learner step: rewards, loss, staleness of trained pairs, idle fractions,
    queue depth, and groups/s in and out. Resumed runs keep the newest record of each step."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    records = list(read_metrics(metrics_path))
    steps = {r["step"]: r for r in records if r.get("event") == "step"}
    step_records = [steps[s] for s in sorted(steps)]
    pipeline = [r for r in records if r.get("event") == "pipeline"]
    fig, axes = plt.subplots(2, 3, figsize=(15, 8))
    ax = axes[0, 0]
    for key, label in (("reward/best", "best of K"), ("reward/mean", "mean of K"), ("reward/x_l", "x^l (worst)")):
        x, y = _series(step_records, key)
        ax.plot(x, _smooth(y), label=label)
    ax.set_title("reward of trained groups (r in [0, 1])")
    ax.legend()
    ax = axes[0, 1]
    x, y = _series(step_records, "loss/loss")
    ax.plot(x, y, alpha=0.3, color="C0")
    ax.plot(x, _smooth(y), color="C0", label="loss")
    x, y = _series(step_records, "loss/frac_below_tau")
    if len(y):
        twin = ax.twinx()
        twin.plot(x, _smooth(y), color="C3", label="frac r(x^l)<tau")
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
    x, y = _series(step_records, "health/learner_idle_frac")
    ax.plot(x, _smooth(y), label="learner (waiting on queue)")
    x, y = _series(pipeline, "health/rollout_idle_frac")
    ax.plot(x, y, label="rollout (back-pressure)")
    ax.set_ylim(0, 1)
    ax.set_title("idle fractions")
    ax.legend()
    ax = axes[1, 1]
    for key, label in (("queue/size", "queued"), ("queue/inflight", "in flight"), ("queue/capacity", "capacity")):
        x, y = _series(pipeline, key)
        ax.plot(x, y, label=label, linestyle="--" if key == "queue/capacity" else "-")
    ax.set_title("replay queue depth (groups)")
    ax.legend()
    ax = axes[1, 2]
    for key, label in (("queue/in_per_s", "generated"), ("queue/out_per_s", "trained")):
        x, y = _series(pipeline, key)
        ax.plot(x, y, label=label)
    ax.set_title("groups / s")
    ax.legend()
    for a in axes.flat:
        if a is not axes[0, 2]:
            a.set_xlabel("learner step")
        a.grid(alpha=0.3)
    fig.tight_layout()
    out_png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_png, dpi=90)
    plt.close(fig)
    return out_png
