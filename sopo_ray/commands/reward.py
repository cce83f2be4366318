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
    score.add_argument("--checkpoint", default=None, help="reward checkpoint (default: {workdir}/reward/reward.pt)")
    score.set_defaults(func=run_score)


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
    from sopo_ray.reward.tmr import load_reward

    if any(not caption.strip() for caption in args.captions):
        raise DataError('empty caption: describe the motion, e.g. '
                        'sopo reward score motion.npy "a person walks forward"')
    cfg = load_config(args.config, args.overrides)
    ckpt = Path(args.checkpoint) if args.checkpoint else Path(cfg.workdir) / "reward" / "reward.pt"
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
