"""Sampler speed and its limit: counted FLOP/s of the rollout sampler, eager and fast, against a matmul peak
measured in the same run on the same threads.

    python bench/sampler.py [--config configs/default.yaml] [--set key=value ...] [--rounds 5] [--threads N]
                            [--captions N] [--k K] [--steps S] [--buckets 8,32] [--compile]

Builds the config's generator at full size with random weights (speed does not depend on them) and one rollout
batch: `--captions` (default `schedule.rollout_batch_size`) captions x `--k` (default `objective.k`) samples, one
length per caption drawn from the embedded data's own length law (uniform in [min_frames, max_frames] for other
sources; a full-length MDM pads every sample to max_frames anyway), random unit text embeddings (rollouts use
cached ones), one seed per sample; `--steps` (default `diffusion.rollout_sample_steps`) DDIM steps with the
config's classifier-free guidance. Each round then times, in turn:
- eager: `MotionGenerator.sample(..., fast=False)`, the sampler as it was: one batch padded to its longest
  motion, `nn.TransformerEncoder`'s own inference path, guidance on two full forwards' outputs;
- fast: `sample(..., fast=True)`, what `diffusion.fast_sampler` (default true) runs (`models/inference.py`);
- the matmul peak: the best of three fp32 (n x n) @ (n x n) products on the same threads.
Times are this process's CPU seconds (other processes on a shared machine stretch wall time, not CPU time; with
one torch thread a CPU-second is a core-second) and wall seconds, both printed. GFLOP per call are counted with
`torch.utils.flop_counter.FlopCounterMode` (matmuls and attention, as bench/flop_model.py counts them) for each
path as it runs, so the fast path's count is smaller (it skips padding and shares work between the guidance
halves); groups are captions. Fractions of the peak and fast/eager ratios are taken round by round and printed as
min / median / max. The two paths' samples are compared first (max abs difference, same seeds). `--buckets` also
times the fast path with other samples-per-bucket on CPU; `--compile` times `torch.compile` of the fast denoiser
call at one fixed shape: compile time, per-forward speed-up, and the forwards it needs to pay for itself.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable
from functools import partial

import numpy as np
import torch
from flop_model import flops
from harness import random_condition
from rich.console import Console
from rich.table import Table
from torch.nn.attention import SDPBackend, sdpa_kernel

from sopo_ray.config import Config, load_config
from sopo_ray.data.synthetic.space import sample_params
from sopo_ray.models.generator import MotionGenerator, build_generator, lengths_to_mask
from sopo_ray.models.inference import guided_forward

D = 263


def rollout_batch(cfg: Config, captions: int, k: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, list[int]]:
    """(text conditions [n*K, ...], lengths [n*K], seeds) of one rollout batch, K samples per caption."""
    rng = np.random.default_rng(seed)
    d = cfg.data
    if d.source == "synthetic":
        lengths = [sample_params(rng, d.min_frames, d.max_frames)[1] for _ in range(captions)]
    else:
        lengths = rng.integers(d.min_frames, d.max_frames + 1, captions).tolist()
    text = random_condition(cfg, captions, seed)
    return (text.repeat_interleave(k, dim=0), torch.tensor(lengths).repeat_interleave(k),
            list(range(captions * k)))


def matmul_peak(n: int) -> float:
    """GFLOP per CPU-second of the best of three fp32 (n x n) @ (n x n) products on the current threads."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    return 2 * n**3 / min(seconds(lambda: a @ b)[1] for _ in range(3)) / 1e9


def seconds(fn: Callable[[], object]) -> tuple[float, float]:
    """(wall, CPU) seconds of `fn()`: CPU time is this process's, so other processes on a shared machine stretch
    the wall time but not it (with one torch thread it is the time on one core)."""
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - wall, time.process_time() - cpu


def spread(values: list[float], fmt: str = "{:.2f}") -> str:
    """min / median / max."""
    return " / ".join(fmt.format(v) for v in (min(values), statistics.median(values), max(values)))


def compile_check(gen: MotionGenerator, lengths: torch.Tensor, text: torch.Tensor, guidance: float,
                  console: Console) -> None:
    """torch.compile of the fast sampler's guided denoiser call at the shape of its first bucket."""
    bucket = gen.buckets(lengths)[0]
    n, frames = len(bucket), int(lengths[bucket].max())
    x = torch.randn(n, frames, gen.model_channels)
    t = torch.full((n,), gen.num_timesteps // 2)
    mask = lengths_to_mask(lengths[bucket], frames)
    fast = partial(guided_forward, gen.denoiser, scale=guidance)
    compiled = torch.compile(fast)
    with torch.inference_mode():
        compile_s = seconds(lambda: compiled(x, t, text[bucket], mask))[0]
        fast(x, t, text[bucket], mask)
        pairs = [(seconds(lambda: fast(x, t, text[bucket], mask))[1],
                  seconds(lambda: compiled(x, t, text[bucket], mask))[1]) for _ in range(20)]
        diff = float((compiled(x, t, text[bucket], mask) - fast(x, t, text[bucket], mask)).abs().max())
    fast_ms = statistics.median(p[0] for p in pairs) * 1e3
    compiled_ms = statistics.median(p[1] for p in pairs) * 1e3
    saved = fast_ms - compiled_ms
    console.print(f"torch.compile of the fast guided denoiser call, one shape ({n} samples x {frames} frames): "
                  f"compile {compile_s:.1f} s wall; forward {fast_ms:.1f} CPU-ms fast vs {compiled_ms:.1f} compiled "
                  f"({fast_ms / compiled_ms:.2f}x, per pair {spread([a / b for a, b in pairs])}); max abs "
                  f"difference {diff:.1e}; pays for itself after "
                  + (f"{compile_s * 1e3 / saved:,.0f} forwards of this shape" if saved > 0 else "never"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="configs/default.yaml")
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: the config's, else 1)")
    parser.add_argument("--captions", type=int, default=None, help="captions (default: schedule.rollout_batch_size)")
    parser.add_argument("--k", type=int, default=None, help="samples per caption (default: objective.k)")
    parser.add_argument("--steps", type=int, default=None, help="DDIM steps (default: rollout_sample_steps)")
    parser.add_argument("--peak-n", type=int, default=1024, help="matrix size of the matmul peak")
    parser.add_argument("--buckets", default="", help="also time these CPU bucket sizes, e.g. 8,16,32")
    parser.add_argument("--compile", action="store_true", help="also time torch.compile at one fixed shape")
    args = parser.parse_args()
    cfg = load_config(args.config, args.overrides)
    torch.set_num_threads(args.threads or cfg.torch_threads or 1)
    captions = args.captions or cfg.schedule.rollout_batch_size
    k = args.k or cfg.objective.k
    steps = args.steps or cfg.diffusion.rollout_sample_steps
    guidance = cfg.diffusion.guidance_scale
    gen = build_generator(cfg, (np.zeros(D, np.float32), np.ones(D, np.float32))).eval()
    text, lengths, seeds = rollout_batch(cfg, captions, k)
    console = Console()
    console.print(f"{cfg.name}: {sum(p.numel() for p in gen.denoiser.parameters()) / 1e6:.1f}M-parameter "
                  f"{cfg.model.architecture} {gen.kind}, {captions} captions x K={k}, {steps} DDIM steps, guidance "
                  f"{guidance:g}, lengths {int(lengths.min())}-{int(lengths.max())} (mean {lengths.float().mean():.0f}"
                  f"), torch threads {torch.get_num_threads()}, {os.cpu_count()} CPUs, load "
                  f"{os.getloadavg()[0]:.1f}")

    def sample(fast: bool, bucket_samples: int = MotionGenerator.bucket_samples) -> torch.Tensor:
        gen.bucket_samples = bucket_samples
        return gen.sample(text, lengths, seeds, steps=steps, guidance=guidance, fast=fast)

    diff = float((sample(False) - sample(True)).abs().max())
    console.print(f"eager vs fast samples, same seeds: max abs difference {diff:.1e}")
    paths: dict[str, Callable[[], torch.Tensor]] = {"eager": partial(sample, False), "fast": partial(sample, True)}
    for size in [int(s) for s in args.buckets.split(",") if s]:
        paths[f"fast, buckets of {size}"] = partial(sample, True, size)
    with sdpa_kernel(SDPBackend.MATH):  # the CPU flash kernel is not counted; the math one is, op by op
        counted = {name: flops(fn) for name, fn in paths.items()}
    wall: dict[str, list[float]] = {name: [] for name in paths}
    cpu: dict[str, list[float]] = {name: [] for name in paths}
    peaks = []
    for _ in range(args.rounds):
        for name, fn in paths.items():
            w, c = seconds(fn)
            wall[name].append(w)
            cpu[name].append(c)
        peaks.append(matmul_peak(args.peak_n))
    table = Table(title=f"rollout sampler, {args.rounds} rounds (min / median / max); matmul peak "
                        f"{spread(peaks, '{:.1f}')} GFLOP per CPU-second ({args.peak_n}x{args.peak_n} fp32)")
    for col in ("path", "GFLOP per call", "CPU s per call", "groups per CPU-s", "groups/s (wall)", "GFLOP per CPU-s",
                "of matmul peak", "vs eager (CPU)", "vs eager (wall)"):
        table.add_column(col, justify="left" if col == "path" else "right")
    for name in paths:
        c, w = cpu[name], wall[name]
        table.add_row(name, f"{counted[name] / 1e9:,.1f}", spread(c), spread([captions / s for s in c]),
                      spread([captions / s for s in w]), spread([counted[name] / s / 1e9 for s in c], "{:.1f}"),
                      spread([100 * counted[name] / s / 1e9 / p for s, p in zip(c, peaks, strict=True)], "{:.0f}%"),
                      spread([e / s for e, s in zip(cpu["eager"], c, strict=True)], "{:.2f}x"),
                      spread([e / s for e, s in zip(wall["eager"], w, strict=True)], "{:.2f}x"))
    console.print(table)
    console.print("per DDIM step and group (median CPU ms): " + ", ".join(
        f"{name} {1e3 * statistics.median(cpu[name]) / steps / captions:.1f}" for name in paths))
    if args.compile:
        gen.bucket_samples = MotionGenerator.bucket_samples
        compile_check(gen, lengths, text, guidance, console)


if __name__ == "__main__":
    main()
