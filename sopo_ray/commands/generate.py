"""`sopo generate "a person jumps twice" --out jump.gif`: sample motions from a trained generator.

`.gif`/`.png` outputs are rendered (animation / filmstrip, all motions side by side); `.npy` writes un-normalised
HumanML3D features [T, D] (or joint positions [T, J, 3] with `--joints`), one file per motion when there are
several (`x_0.npy`, `x_1.npy`, ...).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from sopo_ray.cli import add_config_args, check_number, check_seed
from sopo_ray.config import load_config, model_config
from sopo_ray.errors import CheckpointError, ConfigError
from sopo_ray.memory import check_generation_fits
from sopo_ray.paths import check_output_file

RENDERED = (".gif", ".png")


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the `generate` subcommand."""
    parser = subparsers.add_parser(
        "generate", help="generate motions from captions with a trained model",
        description="Sample motions for one or more captions (DDIM + classifier-free guidance) and render them "
                    "(.gif/.png) or save them (.npy).")
    parser.add_argument("captions", nargs="+", help="caption(s), e.g. \"a person jumps twice\"")
    parser.add_argument("--out", required=True, help="output file: .gif, .png (filmstrip) or .npy")
    parser.add_argument("--checkpoint", default=None,
                        help="generator checkpoint (default: the pretrained base {workdir}/base/{model.kind}/base.pt)")
    parser.add_argument("--num", type=int, default=1, help="motions per caption (different seeds)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the first motion; the others use seed+1, ...")
    parser.add_argument("--length", type=int, default=None,
                        help="frames at 20 fps (default: the median training length stored in the checkpoint)")
    parser.add_argument("--steps", type=int, default=None, help="DDIM steps (default: diffusion.sample_steps)")
    parser.add_argument("--guidance", type=float, default=None,
                        help="classifier-free guidance scale (default: diffusion.guidance_scale)")
    parser.add_argument("--joints", action="store_true", help="with .npy: write joint positions instead of features")
    add_config_args(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Load the generator, sample, and write the output file(s)."""
    import torch

    from sopo_ray.artifacts import base_path
    from sopo_ray.checkpoint import load_checkpoint
    from sopo_ray.models.generator import KINDS, generator_from_payload
    from sopo_ray.motion.features import features_to_joints

    if any(not caption.strip() for caption in args.captions):
        raise ConfigError('empty caption: describe the motion, '
                          'e.g. sopo generate "a person walks forward" --out walk.gif')
    out = Path(args.out)
    if out.suffix not in (*RENDERED, ".npy"):
        raise ConfigError(f"--out {out} must end in .gif, .png or .npy")
    check_number("--num", args.num, low=1, example="1")
    count = len(args.captions) * args.num
    check_seed("--seed", args.seed, count)
    check_number("--length", args.length, low=1, example="120")
    check_number("--steps", args.steps, low=1, example="50")
    check_number("--guidance", args.guidance, low=0.0, example="2.5")
    check_output_file(out, "--out")
    cfg = load_config(args.config, args.overrides)
    if cfg.torch_threads:
        torch.set_num_threads(cfg.torch_threads)
    path = Path(args.checkpoint) if args.checkpoint else base_path(cfg)
    if not path.is_file():
        raise CheckpointError(f"no generator checkpoint at {path}; run `sopo pretrain` (same --config; it imports "
                              "pretrained.mdm when set) first or pass --checkpoint PATH")
    payload = load_checkpoint(path, KINDS)
    gen = generator_from_payload(payload, path).eval()
    check_number("--steps", args.steps, low=1, high=gen.num_timesteps, example=str(gen.default_steps))
    check_generation_fits(model_config(payload["config"]), count, "--num and the captions")
    length = args.length if args.length is not None else int(payload.get("length_median") or gen.max_frames)
    captions = [c for c in args.captions for _ in range(args.num)]
    seeds = [args.seed + i for i in range(len(captions))]
    features = gen.generate(captions, [length] * len(captions), seeds, args.steps, args.guidance,
                            eta=cfg.diffusion.ddim_eta, fast=cfg.diffusion.fast_sampler).cpu().numpy()
    if not np.isfinite(features).all():
        raise CheckpointError(f"{path} generated NaN/inf motions (its weights or mean/std hold NaN/inf: a diverged "
                              "run?); nothing written; generate from an earlier checkpoint or retrain")
    joints = features_to_joints(features)
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.suffix in RENDERED:
        from sopo_ray.motion.render import render_filmstrip, render_gif

        render = render_gif if out.suffix == ".gif" else render_filmstrip
        render(list(joints), captions, out)
        written = [out]
    else:
        arrays = joints if args.joints else features
        written = [out] if len(captions) == 1 else [out.with_name(f"{out.stem}_{i}.npy") for i in
                                                    range(len(captions))]
        for file, array in zip(written, arrays, strict=True):
            np.save(file, array.astype(np.float32))
    for file in written:
        print(file)
    return 0
