"""FLOP model: counted FLOPs of one rollout group and one learner group at paper size, and the GPU split they imply.

    python bench/flop_model.py [--config configs/humanml3d_mdm.yaml --config configs/humanml3d_mld.yaml]
                               [--set key=value ...] [--peak-tflops 989] [--rollout-mfu 0.3] [--learner-mfu 0.3]

For each config it builds the generator and the reward model at the config's sizes (random weights: FLOPs do not
depend on them) and counts, with `torch.utils.flop_counter.FlopCounterMode` (matmuls and attention; elementwise
work is not counted), on one sequence of `data.max_frames` frames:
- rollout, per group: `MotionGenerator.sample` of K samples with `diffusion.rollout_sample_steps` DDIM steps and
  classifier-free guidance (counted at 1 and 2 steps, extrapolated linearly: per-step + one-off such as the MLD
  VAE decode), plus the reward model scoring the K samples and their similarity to x^w;
- learner, per group: `learner.preference_terms` (policy on x^w and x^l with gradient, reference on both, the MLD
  VAE encoding) + `objective_loss` + backward.
Then, for an assumed GPU (`--peak-tflops`, default H100 SXM dense BF16) and model FLOP utilisation, the GPU time
per group on each side, the rollout GPUs one learner GPU needs, and the bytes the pipeline moves (queue, weights).
The FLOP counts are exact for this code; every time derived from them is an estimate (state the MFU you assume).
Cached text embeddings are not counted (rollouts and learners preload them).
"""

from __future__ import annotations

import argparse
import copy

import numpy as np
import torch
from harness import random_condition
from rich.console import Console
from rich.table import Table
from torch.utils.flop_counter import FlopCounterMode

from sopo_ray.algorithm import PolicyErrors, PreferenceBatch, preference_terms
from sopo_ray.config import Config, load_config
from sopo_ray.distributed.weights import state_to_numpy, trainable_keys
from sopo_ray.models.generator import build_generator
from sopo_ray.objectives import objective_loss
from sopo_ray.reward.tmr import TMRReward

CAPTION = "a person walks forward, turns around and sits down"
D = 263


def num(x: float) -> str:
    """3 significant digits, without exponent notation for large values."""
    return f"{x:,.0f}" if x >= 100 else f"{x:.3g}"


def flops(fn) -> int:
    """FLOPs counted while `fn()` runs. nn.TransformerEncoder's inference fast path (eval + no_grad) is one fused op
    the counter does not see, so it is switched off while counting (same math, counted op by op)."""
    fast = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        with FlopCounterMode(display=False) as counter:
            fn()
    finally:
        torch.backends.mha.set_fastpath_enabled(fast)
    return counter.get_total_flops()


def count(cfg: Config) -> dict[str, float]:
    """Counted FLOPs per group (rollout: sampling, reward; learner) and bytes moved per group / per version."""
    frames, k, steps = cfg.data.max_frames, cfg.objective.k, cfg.diffusion.rollout_sample_steps
    policy = build_generator(cfg, (np.zeros(D, np.float32), np.ones(D, np.float32))).eval()
    reference = copy.deepcopy(policy).requires_grad_(False)
    policy.requires_grad_(False)
    policy.denoiser.requires_grad_(True)
    r = cfg.reward
    reward = TMRReward(np.zeros(D, np.float32), np.ones(D, np.float32), r.latent_dim, r.num_layers, r.num_heads,
                       frames_per_token=r.frames_per_token).eval()

    def cached_text(captions: list[str]) -> torch.Tensor:  # text embeddings are cached, not counted (and CLIP's
        return random_condition(cfg, len(captions))      # weights need not be here to count the denoiser)

    policy.encode_text = reference.encode_text = cached_text
    text = policy.encode_text([CAPTION])
    reward.encode_text([CAPTION])                                     # cache the sentence embedding
    lengths = torch.tensor([frames])
    motion = torch.randn(1, frames, D)

    def sample(n_steps: int) -> None:  # the eager sampler, both guidance halves in full (the fast one shares the
        # input and output projections between them: ~1% fewer FLOPs at paper size; bench/sampler.py counts both)
        policy.sample(text, lengths, [0], steps=n_steps, guidance=cfg.diffusion.guidance_scale, fast=False)

    one, two = flops(lambda: sample(1)), flops(lambda: sample(2))
    sampling = k * (one + (two - one) * (steps - 1))

    def score() -> None:
        with torch.no_grad():
            reward.score(motion, lengths, [CAPTION])
            reward.motion_similarity(motion, lengths, motion, lengths)

    scoring = k * flops(score)
    batch = PreferenceBatch([CAPTION], motion, lengths, torch.randn(1, frames, D), lengths, torch.tensor([0.3]),
                            torch.rand(1, k), [0], {})

    def learner_step() -> None:
        terms = preference_terms(cfg, PolicyErrors(policy), policy, reference, batch, torch.Generator().manual_seed(0),
                                 "cpu")
        loss, _ = objective_loss(cfg.objective, terms, cfg.objective.tau, policy.num_timesteps)
        loss.backward()

    return {"sampling": sampling, "reward": scoring, "learner": flops(learner_step),
            "trainable": sum(p.numel() for p in policy.parameters() if p.requires_grad),
            "weights_bytes": sum(a.nbytes for a in state_to_numpy(policy, trainable_keys(policy)).values()),
            "group_bytes": frames * D * 4 + 16 * k}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", action="append", default=None,
                        help="config(s) to model (default: configs/humanml3d_mdm.yaml and configs/humanml3d_mld.yaml)")
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    parser.add_argument("--peak-tflops", type=float, default=989.0, help="GPU peak (H100 SXM dense BF16: 989)")
    parser.add_argument("--rollout-mfu", type=float, default=0.3, help="assumed model FLOP utilisation, rollouts")
    parser.add_argument("--learner-mfu", type=float, default=0.3, help="assumed model FLOP utilisation, learner")
    args = parser.parse_args()
    torch.set_num_threads(2)
    paths = args.config or ["configs/humanml3d_mdm.yaml", "configs/humanml3d_mld.yaml"]
    console = Console()
    table = Table(title=f"per group, counted FLOPs; times at {args.peak_tflops:g} TFLOP/s x MFU "
                        f"{args.rollout_mfu:g} (rollout) / {args.learner_mfu:g} (learner)")
    for col in ("config", "K x steps", "rollout GFLOP (sample + reward)", "learner GFLOP", "rollout / learner",
                "rollout ms", "learner ms", "learner step ms", "rollout GPUs per learner GPU", "MB per version",
                "group KB"):
        table.add_column(col, justify="left" if col == "config" else "right")
    for path in paths:
        cfg = load_config(path, args.overrides)
        c = count(cfg)
        rollout = c["sampling"] + c["reward"]
        r_ms = 1e3 * rollout / (args.peak_tflops * 1e12 * args.rollout_mfu)
        l_ms = 1e3 * c["learner"] / (args.peak_tflops * 1e12 * args.learner_mfu)
        table.add_row(cfg.name, f"{cfg.objective.k} x {cfg.diffusion.rollout_sample_steps}",
                      f"{num(rollout / 1e9)} ({num(c['sampling'] / 1e9)} + {num(c['reward'] / 1e9)})",
                      num(c["learner"] / 1e9), f"{rollout / c['learner']:.1f}", num(r_ms), num(l_ms),
                      num(l_ms * cfg.schedule.batch_size), f"{r_ms / l_ms:.1f}", num(c["weights_bytes"] / 1e6),
                      f"{c['group_bytes'] / 1e3:.0f}")
        console.print(f"{cfg.name}: {c['trainable'] / 1e6:.1f}M trainable parameters, T={cfg.data.max_frames}, "
                      f"guidance {cfg.diffusion.guidance_scale}, batch {cfg.schedule.batch_size}")
    console.print(table)


if __name__ == "__main__":
    main()
