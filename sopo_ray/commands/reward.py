"""`sopo reward train` (fit the TMR-style reward model) and `sopo reward score MOTION.npy CAPTION...`.

Heavy imports (torch, the text encoder) happen inside the commands so `sopo --help` stays fast.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

from sopo_ray.cli import add_config_args
from sopo_ray.config import load_config
from sopo_ray.errors import DataError
from sopo_ray.paths import check_output_file

MIN_CLAUSE_SUPPORT = 10
"""`sopo reward check` prints a clause's single-clause agreement when at least this many pairs decide it, and its
variation within groups when at least this many captions were judged on it."""
LEAST_SATISFIED = 5
"""How many of the least satisfied clauses `sopo reward check` names per split."""


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add `sopo reward {train,score}`."""
    parser = subparsers.add_parser("reward", help="train the TMR-style reward model or score a motion with it")
    verbs = parser.add_subparsers(dest="reward_command", metavar="VERB", required=True)

    train = verbs.add_parser("train", help="train on the train split; report val retrieval R@1/R@5")
    add_config_args(train)
    train.add_argument("--out", default=None, help="checkpoint path (default: {workdir}/reward/reward.pt)")
    train.set_defaults(func=run_train)

    score = verbs.add_parser("score", help="reward (cos+1)/2 in [0, 1] of one motion for one or more captions")
    add_config_args(score)
    score.add_argument("motion", help="un-normalised HumanML3D features, a .npy of shape [frames, 263]")
    score.add_argument("captions", nargs="+", help="caption(s) to score the motion against")
    score.add_argument("--checkpoint", default=None, help="reward checkpoint (default: {workdir}/reward/reward.pt, "
                       "or the import of pretrained.tmr, imported first when missing)")
    score.set_defaults(func=run_score)

    check = verbs.add_parser(
        "check", help="how well the reward ranks a policy's own K samples, against the oracle, per split",
        description="Sample K motions per caption from a policy (default: the base model), score them with the "
                    "reward model and the caption oracle, and report pairwise agreement, best-of-K oracle gain "
                    "and the gate pass rate at tau, per split (embedded data only). Writes JSON beside the reward "
                    "checkpoint.")
    add_config_args(check)
    check.add_argument("--policy", default=None, help="generator checkpoint (default: the base model)")
    check.add_argument("--checkpoint", default=None, help="reward checkpoint (default: {workdir}/reward/reward.pt)")
    check.add_argument("--splits", nargs="+", default=["train", "test", "compositional"],
                       choices=("train", "val", "test", "compositional"), help="splits to check")
    check.add_argument("--k", type=int, default=4, help="samples per caption (default 4)")
    check.add_argument("--captions", type=int, default=128, help="captions per split (default 128)")
    check.add_argument("--seed", type=int, default=0, help="seed of the captions and the initial noises")
    check.add_argument("--out", default=None, help="JSON output (default: <reward checkpoint>_check.json)")
    check.set_defaults(func=run_check)


def run_train(args: argparse.Namespace) -> int:
    """Train the reward model and print its val retrieval."""
    from sopo_ray.checkpoint import load_checkpoint
    from sopo_ray.reward.training import train_reward

    cfg = load_config(args.config, args.overrides)
    if args.out is not None:
        check_output_file(args.out, "--out")
    path = train_reward(cfg, args.out)
    payload = load_checkpoint(path, "reward")
    table = Table(title=f"reward model {path} (trained in {payload['train_seconds']} s)")
    table.add_column("last step (retrieval on the val split)")
    table.add_column("value", justify="right")
    for key, value in sorted(payload["metrics"].items()):
        if key != "lr":
            table.add_row(key, f"{value:.4g}")
    Console().print(table)
    return 0


def run_score(args: argparse.Namespace) -> int:
    """Print r(motion, caption) for each caption."""
    from sopo_ray import artifacts
    from sopo_ray.reward import load_reward

    if any(not caption.strip() for caption in args.captions):
        raise DataError('empty caption: describe the motion, e.g. '
                        'sopo reward score motion.npy "a person walks forward"')
    cfg = load_config(args.config, args.overrides)
    ckpt = Path(args.checkpoint) if args.checkpoint else artifacts.reward_path(cfg)
    if args.checkpoint is None and cfg.pretrained.tmr is not None and not ckpt.is_file():
        artifacts.build_reward(cfg, ckpt, Console(stderr=True))
    try:
        motion = np.load(args.motion, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise DataError(f"cannot read motion {args.motion} ({exc}); pass a .npy of un-normalised features") from None
    model = load_reward(ckpt)
    if motion.ndim != 2 or motion.shape[1] != model.feature_dim:
        raise DataError(f"motion {args.motion} has shape {motion.shape}; expected [frames, {model.feature_dim}] "
                        "un-normalised features (joints must be converted with joints_to_features first)")
    if len(motion) == 0:
        raise DataError(f"motion {args.motion} has no frames; pass a motion of at least one frame")
    if motion.dtype.kind not in "fiu" or not np.isfinite(motion).all():
        raise DataError(f"motion {args.motion} holds NaN/inf or non-numeric values; regenerate the motion (or drop "
                        "its bad frames)")
    batch = np.repeat(motion[None].astype(np.float32), len(args.captions), axis=0)
    scores = model.score(batch, [len(motion)] * len(args.captions), args.captions)
    if not np.isfinite(scores.numpy()).all():
        raise DataError(f"reward checkpoint {ckpt} scores this motion NaN/inf (its weights or statistics hold "
                        "NaN/inf); retrain the reward model (`sopo reward train`) or pass another --checkpoint")
    for caption, value in zip(args.captions, scores.tolist(), strict=True):
        print(f"{value:.4f}\t{caption}")
    return 0


def run_check(args: argparse.Namespace) -> int:
    """Print and write the reward's ranking figures on the policy's own samples, per split."""
    import json

    import torch

    from sopo_ray import artifacts
    from sopo_ray.algorithm import calibrate_tau
    from sopo_ray.checkpoint import load_checkpoint
    from sopo_ray.data import load_dataset
    from sopo_ray.evaluation.metrics import actions_label
    from sopo_ray.models.generator import KINDS, generator_from_payload
    from sopo_ray.reward import load_reward
    from sopo_ray.reward.diagnostics import count_probe, order_probe, ranking_figures, score_policy_samples

    cfg = load_config(args.config, args.overrides)
    if cfg.data.source != "synthetic":
        raise DataError("sopo reward check measures against the caption oracle, which only the embedded synthetic "
                        "dataset has; use data.source synthetic")
    if args.k < 2 or args.captions < 1:
        raise DataError(f"--k must be >= 2 and --captions >= 1, got {args.k} and {args.captions}")
    if cfg.torch_threads:
        torch.set_num_threads(cfg.torch_threads)
    policy_path = Path(args.policy) if args.policy else artifacts.base_path(cfg)
    reward_path = Path(args.checkpoint) if args.checkpoint else artifacts.reward_path(cfg)
    train = load_dataset(cfg.data, "train")
    policy_payload = artifacts.sample_as_configured(load_checkpoint(policy_path, KINDS, train.data_id), cfg)
    policy = generator_from_payload(policy_payload, policy_path).eval()
    reward = load_reward(reward_path, train.data_id)
    d = cfg.diffusion
    tau = calibrate_tau(cfg, policy, reward, train)   # the run's tau: objective.tau, or tau_quantile / tau_gate's
    console = Console()
    results = {}
    for split in args.splits:
        dataset = load_dataset(cfg.data, split)
        scores = score_policy_samples(policy, reward, dataset, k=args.k, num_captions=args.captions,
                                      steps=d.rollout_sample_steps, guidance=d.guidance_scale,
                                      eta=d.rollout_ddim_eta, seed=args.seed)
        results[split] = ranking_figures(scores, tau) | {"count_probe": count_probe(reward, dataset),
                                                         "order_probe": order_probe(reward, dataset)}
    table = Table(title=f"reward {reward_path} on {policy_path}'s own samples (K={args.k}, {args.captions} captions "
                        f"per split, {d.rollout_sample_steps} DDIM steps, eta {d.rollout_ddim_eta:g}, "
                        f"guidance {d.guidance_scale:g})")
    for column in ("split", "agreement", "oracle mean", "reward-best", "reward-worst", "oracle-best",
                   f"gate rate (tau {tau:g})", "real > sample"):
        table.add_column(column, justify="left" if column == "split" else "right")
    for split, f in results.items():
        table.add_row(split, f"{f['agreement'][0]:.3f}±{f['agreement'][1]:.3f}", f"{f['oracle_mean'][0]:.3f}",
                      f"{f['oracle_reward_best'][0]:.3f}", f"{f['oracle_reward_worst'][0]:.3f}",
                      f"{f['oracle_best'][0]:.3f}", f"{f['gate_rate']:.2f}", f"{f['real_over_sample']:.2f}")
    Console(width=max(console.width, 160)).print(table)
    for split, f in results.items():
        common = [f"{kind} {a:.2f} ({n:.0f})" for kind, (a, n) in f["single_clause"].items() if n >= MIN_CLAUSE_SUPPORT]
        console.print(f"{split}, agreement on pairs that differ in one clause (pairs): " + (", ".join(common) or "-"))
        v = f["clause_variation"]
        weakest = sorted((a, kind, vary) for kind, (a, vary, n) in v["kinds"].items() if n >= MIN_CLAUSE_SUPPORT)
        console.print(f"{split}, a caption's K samples disagree on {v['varying']:.0%} of its clauses; "
                      f"{v['shared_failures']:.0%} of their failed clauses fail in every sample of the caption (no "
                      "x^w or x^l among them does it right). Least satisfied: "
                      + (", ".join(f"{kind} {a:.2f} (samples disagree for {vary:.0%} of captions)"
                                   for a, kind, vary in weakest[:LEAST_SATISFIED]) or "-"))
        by = ", ".join(f"{actions_label(n)} {a:.2f}±{ci:.2f} ({groups} captions)"
                       for n, (a, ci, groups) in f["by_actions"].items())
        console.print(f"{split}, agreement by the number of actions in the caption: {by or '-'}")
        c = f["count_probe"]
        hint = " (lower: part of its count comes from the clip's length)" if c["padded"] < c["as_is"] - 0.1 else ""
        console.print(f"{split}, real motions: the reward picks the caption's own count {c['as_is']:.2f} "
                      f"({c['motions']} motions), {c['padded']:.2f} when the motion then stands still to the "
                      f"split's full length{hint}")
        o = f["order_probe"]
        console.print(f"{split}, real motions of several actions: the reward prefers the caption's own order to "
                      f"every swap of two neighbouring actions {o['own_order']:.2f} ({o['motions']} motions)")
    out = Path(args.out) if args.out else reward_path.with_name(f"{reward_path.stem}_check.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"policy": str(policy_path), "reward": str(reward_path), "k": args.k,
                               "captions": args.captions, "seed": args.seed, "tau": tau,
                               "sample_steps": d.rollout_sample_steps, "eta": d.rollout_ddim_eta,
                               "guidance": d.guidance_scale,
                               "splits": results}, indent=2))
    console.print(f"wrote {out}")
    return 0
