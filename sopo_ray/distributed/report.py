"""After a run: evaluate the aligned policy against the base on every held-out split, write report.json /
report.md, and draw the pipeline dashboard (dashboard.png) from the run's metrics.jsonl.

Both models are evaluated with one seed, so they see the same held-out captions, lengths and initial noises;
differences are the aligned model's doing. The in-distribution test split comes first (the paper's protocol),
then the compositional one (held-out combinations: the harder generalisation test).
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


def _evaluate(cfg: Config, checkpoint: str, evaluator_path: str, reward_path: str, seed: int,
              split: str) -> tuple[dict[str, Any], np.ndarray | None]:
    """The evaluation protocol's table for one generator checkpoint on one held-out split, and (embedded data,
    `evaluator.paired_oracle`) its oracle score on every motion of the split."""
    import torch

    from sopo_ray.data.store import load_dataset
    from sopo_ray.evaluation.evaluator import load_evaluator
    from sopo_ray.evaluation.protocol import evaluate_generator, oracle_per_motion
    from sopo_ray.models.generator import load_generator
    from sopo_ray.reward.tmr import load_reward

    if cfg.torch_threads:
        torch.set_num_threads(cfg.torch_threads)
    data = load_dataset(cfg.data, split)
    generator, _ = load_generator(checkpoint, data.data_id)
    evaluator = load_evaluator(evaluator_path, data.data_id)
    reward = load_reward(reward_path, data.data_id)
    table = evaluate_generator(generator, evaluator, reward, data, cfg, seed)
    paired = cfg.evaluator.paired_oracle and data.params is not None
    return table, oracle_per_motion(generator, data, cfg, seed) if paired else None


def evaluate_models(cfg: Config, art: Any, paths: dict[str, Path],
                    seed: int) -> dict[str, dict[str, tuple[dict[str, Any], np.ndarray | None]]]:
    """{split: {model name: (metric table, per-motion oracle scores or None)}} for each generator in `paths` on
    every held-out split the data has
    (`data.store.eval_splits`: in-distribution test first, then compositional), all with one seed, so every
    model sees the same captions, lengths and initial noises. Inside Ray the evaluations run as parallel tasks
    on the driver's node (one CPU each); otherwise one after another in this process."""
    from sopo_ray.data.store import eval_splits

    jobs = [(split, name, (cfg, str(Path(p).resolve()), str(Path(art.evaluator_path).resolve()),
                           str(Path(art.reward_path).resolve()), seed, split))
            for split in eval_splits(cfg.data) for name, p in paths.items()]
    if ray.is_initialized():
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=False)
        task = ray.remote(_evaluate).options(num_cpus=1, scheduling_strategy=here)
        refs = [task.remote(*args) for _, _, args in jobs]
        tables = ray.get(refs)
    else:
        tables = [_evaluate(*args) for _, _, args in jobs]
    rows: dict[str, dict[str, Any]] = {}
    for (split, name, _), table in zip(jobs, tables, strict=True):
        rows.setdefault(split, {})[name] = table
    return rows


SPLIT_TITLES = {"test": "in-distribution test split (unseen motions of seen combinations)",
                "compositional": "compositional split (held-out combinations and orders)"}


def evaluate_and_report(cfg: Config, art: Any, policy_path: Path, run_dir: Path, console: Console) -> dict[str, Any]:
    """Evaluate base and aligned on every held-out split, print and write the comparison, draw the dashboard."""
    from sopo_ray.commands.evaluate import HEADERS, format_cell
    from sopo_ray.evaluation.protocol import COLUMNS

    console.print(f"[bold]final evaluation[/]: base vs aligned ({cfg.evaluator.replications} replications x "
                  f"{cfg.evaluator.num_captions} captions per split, {cfg.diffusion.sample_steps} DDIM steps)")
    from sopo_ray.evaluation.metrics import paired_difference_ci

    paths = {"base": art.base_path, "aligned": policy_path}
    evaluated = evaluate_models(cfg, art, paths, cfg.seed)
    by_split = {split: {name: table for name, (table, _) in models.items()} for split, models in evaluated.items()}
    report: dict[str, Any] = {"objective": cfg.objective.name, "steps": cfg.schedule.total_steps, "seed": cfg.seed,
                              "checkpoints": {k: str(v) for k, v in paths.items()}, "splits": {}}
    lines = [f"# {cfg.name}: {cfg.objective.name}, {cfg.schedule.total_steps} steps", ""]
    for split, rows in by_split.items():
        deltas = {k: rows["aligned"][k][0] - rows["base"][k][0] for k in COLUMNS if k in rows["base"]}
        title = f"{SPLIT_TITLES.get(split, split)}, mean ± 95% CI over {cfg.evaluator.replications} replications"
        print_table(console, results_table(rows, title))
        report["splits"][split] = {
            "rows": {n: {k: {"mean": v[0], "ci95": v[1]} for k, v in r.items()} for n, r in rows.items()},
            "delta": deltas}
        base_scores, aligned_scores = evaluated[split]["base"][1], evaluated[split]["aligned"][1]
        paired_line = ""
        if base_scores is not None and aligned_scores is not None:
            diff, ci = paired_difference_ci(base_scores, aligned_scores)
            paired = {"motions": int(base_scores.size), "base": float(base_scores.mean()),
                      "aligned": float(aligned_scores.mean()), "delta": diff, "ci95": ci}
            report["splits"][split]["paired_oracle"] = paired
            paired_line = (f"Oracle on all {paired['motions']} motions, paired (same caption and noise for both): "
                           f"{paired['base']:.3f} → {paired['aligned']:.3f}, Δ {diff:+.3f} ± {ci:.3f} "
                           "(95% CI of the paired difference)")
            console.print(paired_line, highlight=False)
        lines += [f"## {title}", "", "| model | " + " | ".join(HEADERS[k] for k in COLUMNS) + " |",
                  "|---|" + "---|" * len(COLUMNS)]
        for name, row in rows.items():
            lines.append(f"| {name} | " + " | ".join(format_cell(row.get(k)) for k in COLUMNS) + " |")
        lines.append("| Δ aligned-base | " + " | ".join(f"{deltas[k]:+.3f}" if k in deltas else "-"
                                                        for k in COLUMNS) + " |")
        lines += ["", paired_line, ""] if paired_line else [""]
    (run_dir / "report.json").write_text(json.dumps(report, indent=2))
    lines += ["![pipeline dashboard](dashboard.png)", ""]
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
