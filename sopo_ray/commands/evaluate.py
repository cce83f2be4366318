"""`sopo evaluate`: the paper's table (R@1 R@2 R@3 FID MM-Dist Diversity MultiModality) plus the oracle score
and the mean reward, for a "Real" reference row and each `--checkpoint`, as mean +- 95% CI over replications.
With two or more checkpoints on the embedded data it also compares each with the first on the oracle, paired
(every motion of the split, the same captions and noises for all; `--paired-draws` noise draws per motion), whose
CI is far narrower than the replications'; `--paired-only` skips the tables. `--split train --paired-only`
runs the same comparison on the training split's motions: set beside a held-out split's, it says whether what a
policy learned on its training captions carries to unseen ones (no table there: the evaluator and the reward
trained on that split).

The evaluator and the reward model are trained on the train split if their checkpoints do not exist yet, so
one command evaluates a base model. Heavy imports happen inside `run` so `sopo --help` stays fast.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from sopo_ray.cli import add_config_args, check_seed
from sopo_ray.config import Config, config_to_dict, load_config, with_overrides
from sopo_ray.console import make_console, print_table
from sopo_ray.errors import CheckpointError, ConfigError
from sopo_ray.paths import check_output_file


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add `sopo evaluate`."""
    parser = subparsers.add_parser(
        "evaluate", help="T2M metrics (R-precision, FID, MM-Dist, Diversity, MModality) + oracle + reward",
        description="Evaluate generator checkpoints and the real motions of a split with the independent "
                    "evaluator; prints mean +- 95% CI over evaluator.replications and writes JSON.")
    add_config_args(parser)
    parser.add_argument("--checkpoint", action="append", default=[], metavar="PATH",
                        help="generator checkpoint (mdm/mld), repeatable; none: only the Real row")
    parser.add_argument("--split", action="append", default=None, choices=("test", "compositional", "val", "train"),
                        help="split, repeatable (default: the in-distribution test split, then the compositional "
                             "one where the data has it); train only with --paired-only")
    parser.add_argument("--no-real", dest="real", action="store_false", help="skip the Real reference row")
    parser.add_argument("--evaluator", default=None, help="evaluator checkpoint "
                        "(default: {workdir}/evaluator/evaluator.pt, trained there if missing)")
    parser.add_argument("--reward", default=None, help="reward checkpoint "
                        "(default: {workdir}/reward/reward.pt, trained there if missing)")
    parser.add_argument("--retrain-evaluator", action="store_true", help="train the evaluator again first")
    parser.add_argument("--seed", type=int, default=0, help="evaluation seed (same seed: same captions and noise)")
    parser.add_argument("--out", default=None, help="JSON output (default: beside the first checkpoint, "
                        "or {workdir}/eval/real.json)")
    parser.add_argument("--paired-draws", type=int, default=1, metavar="N",
                        help="embedded data, two or more checkpoints: noise draws per motion of the paired oracle "
                             "comparison of each checkpoint with the first (default 1, as the run's report)")
    parser.add_argument("--paired-only", action="store_true",
                        help="only the paired oracle comparison, no metric tables (quick, for sweeps)")
    parser.set_defaults(func=run)


def resolve_config(args: argparse.Namespace, first_ckpt_config: dict[str, Any] | None) -> Config:
    """--config if given; else the first checkpoint's own config (same data, sampler, workdir) with the
    `evaluator` section at today's defaults, so every model is evaluated alike; --set applies last."""
    if args.config is not None or first_ckpt_config is None:
        return load_config(args.config, args.overrides)
    raw = {k: v for k, v in first_ckpt_config.items() if k != "evaluator"}
    try:
        return with_overrides(Config.model_validate(raw), args.overrides)
    except ValueError as exc:
        raise CheckpointError(f"checkpoint {args.checkpoint[0]} has a config this version cannot read ({exc}); "
                              "pass --config with the config it was trained with") from None


def paired_oracle(generators: dict[str, Any], dataset: Any, cfg: Config, seed: int, draws: int, split: str,
                  console: Any) -> dict[str, dict[str, float]]:
    """Oracle score of every motion of `dataset` under `draws` noise draws (seeds seed, seed+1, ...) for each
    generator, the same captions, lengths and noises for all, and each one's paired difference from the first
    (`metrics.paired_difference_ci`); printed one line per generator."""
    from sopo_ray.evaluation.metrics import (
        by_actions_text,
        caption_actions,
        paired_difference_by_actions,
        paired_difference_ci,
    )
    from sopo_ray.evaluation.protocol import oracle_per_motion

    scores = {path: np.concatenate([oracle_per_motion(gen, dataset, cfg, seed + d) for d in range(draws)])
              for path, gen in generators.items()}
    actions = np.tile(caption_actions(dataset.params), draws)
    first, *others = scores
    console.print(f"{split} split, oracle on all {len(dataset)} motions x {draws} noise draws, paired with "
                  f"{first} ({scores[first].mean():.3f}):", highlight=False)
    out = {}
    for path in others:
        diff, ci = paired_difference_ci(scores[first], scores[path])
        out[path] = {"samples": int(scores[path].size), "first": float(scores[first].mean()),
                     "mean": float(scores[path].mean()), "delta": diff, "ci95": ci,
                     "by_actions": paired_difference_by_actions(scores[first], scores[path], actions)}
        console.print(f"  {path}: {out[path]['mean']:.3f}, Δ {diff:+.3f} ± {ci:.3f} (95% CI of the paired "
                      f"difference); by actions in the caption: {by_actions_text(out[path]['by_actions'])}",
                      highlight=False)
    return out


def run(args: argparse.Namespace) -> int:
    """Evaluate and print/write one table per split."""
    import torch

    from sopo_ray import artifacts
    from sopo_ray.checkpoint import load_checkpoint
    from sopo_ray.data import eval_splits, load_dataset
    from sopo_ray.evaluation.evaluator import load_evaluator
    from sopo_ray.evaluation.protocol import COLUMNS, evaluate_generator, evaluate_real
    from sopo_ray.evaluation.tables import models_table
    from sopo_ray.models.generator import load_generator
    from sopo_ray.reward import load_reward

    check_seed("--seed", args.seed)
    if args.paired_draws < 1:
        raise ConfigError(f"--paired-draws must be at least 1, got {args.paired_draws}; pass 1 or more")
    if args.paired_only and len(args.checkpoint) < 2:
        raise ConfigError("--paired-only compares checkpoints with the first one; pass --checkpoint at least twice "
                          "(e.g. the base model, then the aligned policy)")
    if "train" in (args.split or []) and not args.paired_only:
        raise ConfigError("--split train gives only the paired oracle comparison (the evaluator and the reward "
                          "were trained on that split, so its metric tables would not be held out); add "
                          "--paired-only, or pick a held-out split: test, compositional or val")
    if args.out:
        check_output_file(args.out, "--out")
    console = make_console()
    generators = [load_generator(path) for path in args.checkpoint]
    cfg = resolve_config(args, generators[0][1] if generators else None)
    if cfg.torch_threads:
        torch.set_num_threads(cfg.torch_threads)
    splits = list(dict.fromkeys(args.split or eval_splits(cfg.data)))
    datasets = {split: load_dataset(cfg.data, split) for split in splits}
    data_id = next(iter(datasets.values())).data_id
    if args.paired_only and next(iter(datasets.values())).params is None:
        raise ConfigError("--paired-only needs the caption oracle, which only the embedded dataset has "
                          "(data.source: synthetic); drop --paired-only to get the metric tables")
    for path in args.checkpoint:  # refuse a generator trained on another dataset before any work
        load_checkpoint(path, None, data_id)
    eval_path = Path(args.evaluator) if args.evaluator else artifacts.evaluator_path(cfg)
    reward_path = Path(args.reward) if args.reward else artifacts.reward_path(cfg)
    tables = not args.paired_only   # the metric tables need the evaluator and the reward; the oracle needs neither
    for path, flag in ((eval_path, "--evaluator"), (reward_path, "--reward")):
        if tables and (not path.is_file() or (flag == "--evaluator" and args.retrain_evaluator)):
            check_output_file(path, flag)   # built there first
    out = Path(args.out) if args.out else None
    if out is None and args.checkpoint:
        out = Path(args.checkpoint[0]).with_name(f"{Path(args.checkpoint[0]).stem}_eval.json")
    out = check_output_file(out or Path(cfg.workdir) / "eval" / "real.json", "--out")
    if tables and (args.retrain_evaluator or not eval_path.is_file()):
        if cfg.pretrained.t2m_evaluator is None:
            console.print(f"[bold]training the evaluator[/] (train split only) -> {eval_path}")
        artifacts.build_evaluator(cfg, eval_path, console)
    if tables and not reward_path.is_file():
        if cfg.pretrained.tmr is None:
            console.print(f"[bold]training the reward model[/] -> {reward_path}")
        artifacts.build_reward(cfg, reward_path, console)
    evaluator = load_evaluator(eval_path, data_id) if tables else None
    reward = load_reward(reward_path, data_id) if tables else None

    results: dict[str, Any] = {}
    for split, dataset in datasets.items():
        rows: dict[str, dict[str, tuple[float, float]]] = {}
        timings: dict[str, float] = {}
        results[split] = {"seconds": timings, "motions": len(dataset)}
        if len(generators) >= 2 and dataset.params is not None:
            results[split]["paired_oracle"] = paired_oracle(
                {path: gen for path, (gen, _) in zip(args.checkpoint, generators, strict=True)}, dataset, cfg,
                args.seed, args.paired_draws, split, console)
        if not tables:
            continue
        if args.real:
            start = time.time()
            rows["Real"] = evaluate_real(evaluator, reward, dataset, cfg, args.seed, progress=True)
            timings["Real"] = round(time.time() - start, 1)
        for path, (gen, _) in zip(args.checkpoint, generators, strict=True):
            start = time.time()
            rows[path] = evaluate_generator(gen, evaluator, reward, dataset, cfg, args.seed, progress=True)
            timings[path] = round(time.time() - start, 1)
        title = (f"{split} split: mean ± 95% CI over {cfg.evaluator.replications} replications (seed {args.seed}, "
                 f"{cfg.diffusion.sample_steps} sampling steps)")
        print_table(console, models_table(rows, title))  # every cell whole, whatever the terminal's (or log's) width
        results[split]["rows"] = {name: {k: {"mean": v[0], "ci95": v[1]} for k, v in row.items()}
                                  for name, row in rows.items()}

    report = {
        "seed": args.seed, "replications": cfg.evaluator.replications, "columns": list(COLUMNS),
        "evaluator": str(eval_path) if tables else None, "reward": str(reward_path) if tables else None,
        "data_id": data_id, "splits": results,
        "config": config_to_dict(cfg),
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2))
    console.print(f"wrote {out}")
    return 0
