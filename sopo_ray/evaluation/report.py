"""After a run: evaluate the aligned policy against the base on every held-out split and write report.json /
report.md (the trainers draw the pipeline dashboard beside it, `distributed.dashboard`).

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
from sopo_ray.evaluation.protocol import COLUMNS
from sopo_ray.evaluation.tables import comparison_markdown, comparison_table


def _evaluate(cfg: Config, checkpoint: str, evaluator_path: str, reward_path: str, seed: int,
              split: str) -> tuple[dict[str, Any], np.ndarray | None, np.ndarray | None]:
    """The evaluation protocol's table for one generator checkpoint on one held-out split, and (embedded data,
    `evaluator.paired_oracle`) its oracle score on every motion of the split with the number of actions in each
    motion's caption (`metrics.caption_actions`)."""
    import torch

    from sopo_ray.data import load_dataset
    from sopo_ray.evaluation.evaluator import load_evaluator
    from sopo_ray.evaluation.metrics import caption_actions
    from sopo_ray.evaluation.protocol import evaluate_generator, oracle_per_motion
    from sopo_ray.models.generator import load_generator
    from sopo_ray.reward import load_reward

    if cfg.torch_threads:
        torch.set_num_threads(cfg.torch_threads)
    data = load_dataset(cfg.data, split)
    generator, _ = load_generator(checkpoint, data.data_id)
    evaluator = load_evaluator(evaluator_path, data.data_id)
    reward = load_reward(reward_path, data.data_id)
    table = evaluate_generator(generator, evaluator, reward, data, cfg, seed)
    if not (cfg.evaluator.paired_oracle and data.params is not None):
        return table, None, None
    return table, oracle_per_motion(generator, data, cfg, seed), caption_actions(data.params)


def evaluate_models(cfg: Config, art: Any, paths: dict[str, Path],
                    seed: int) -> dict[str, dict[str, tuple[dict[str, Any], np.ndarray | None, np.ndarray | None]]]:
    """{split: {model name: (metric table, per-motion oracle scores and the number of actions in each motion's
    caption, or None twice)}} for each generator in `paths` on
    every held-out split the data has
    (`data.eval_splits`: in-distribution test first, then compositional), all with one seed, so every
    model sees the same captions, lengths and initial noises. Inside Ray the evaluations run as parallel tasks
    on the driver's node (one CPU each); otherwise one after another in this process."""
    from sopo_ray.data import eval_splits

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
    """Evaluate base and aligned on every held-out split, print the comparison and write report.json /
    report.md."""
    console.print(f"[bold]final evaluation[/]: base vs aligned ({cfg.evaluator.replications} replications x "
                  f"{cfg.evaluator.num_captions} captions per split, {cfg.diffusion.sample_steps} DDIM steps)")
    from sopo_ray.evaluation.metrics import by_actions_text, paired_difference_by_actions, paired_difference_ci

    paths = {"base": art.base_path, "aligned": policy_path}
    evaluated = evaluate_models(cfg, art, paths, cfg.seed)
    by_split = {split: {name: table for name, (table, _, _) in models.items()} for split, models in evaluated.items()}
    report: dict[str, Any] = {"objective": cfg.objective.name, "steps": cfg.schedule.total_steps, "seed": cfg.seed,
                              "checkpoints": {k: str(v) for k, v in paths.items()}, "splits": {}}
    lines = [f"# {cfg.name}: {cfg.objective.name}, {cfg.schedule.total_steps} steps", ""]
    for split, rows in by_split.items():
        deltas = {k: rows["aligned"][k][0] - rows["base"][k][0] for k in COLUMNS if k in rows["base"]}
        title = f"{SPLIT_TITLES.get(split, split)}, mean ± 95% CI over {cfg.evaluator.replications} replications"
        print_table(console, comparison_table(rows, title))
        report["splits"][split] = {
            "rows": {n: {k: {"mean": v[0], "ci95": v[1]} for k, v in r.items()} for n, r in rows.items()},
            "delta": deltas}
        lines += [f"## {title}", "", *comparison_markdown(rows), ""]
        (_, base_scores, actions), (_, aligned_scores, _) = evaluated[split]["base"], evaluated[split]["aligned"]
        if base_scores is not None and aligned_scores is not None:
            diff, ci = paired_difference_ci(base_scores, aligned_scores)
            groups = paired_difference_by_actions(base_scores, aligned_scores, actions)
            paired = {"motions": int(base_scores.size), "base": float(base_scores.mean()),
                      "aligned": float(aligned_scores.mean()), "delta": diff, "ci95": ci, "by_actions": groups}
            report["splits"][split]["paired_oracle"] = paired
            line = (f"Oracle on all {paired['motions']} motions, paired (same caption and noise for both): "
                    f"{paired['base']:.3f} → {paired['aligned']:.3f}, Δ {diff:+.3f} ± {ci:.3f} "
                    f"(95% CI of the paired difference); by actions in the caption: {by_actions_text(groups)}")
            console.print(line, highlight=False)
            lines += [line, ""]
    (run_dir / "report.json").write_text(json.dumps(report, indent=2))
    lines += ["![pipeline dashboard](dashboard.png)", ""]
    (run_dir / "report.md").write_text("\n".join(lines))
    return report
