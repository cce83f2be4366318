"""Where did alignment move the policy's likelihood? Denoising-error change on the base's own best and worst samples.

    python scripts/preference_shift.py --config configs/default.yaml --policy runs/<run>/policy.pt [--policy ...]
                                       [--base artifacts/base/mdm/base.pt] [--split test] [--captions 200]
                                       [--set key=value ...]

The base samples K motions for each of `--captions` held-out captions (embedded data); the caption oracle picks
each group's best and worst (groups whose K oracle scores tie are skipped). For every policy, at `--t-draws`
shared (t, noise) draws, L(x) = err_policy(x) - err_base(x) (the Diffusion-DPO difference, Eq. 15) on
- the oracle-best sample, the oracle-worst sample and the split's real motion of the caption.
Negative L: the policy explains that motion better than the base did. A preference method that learned the
caption should lower L on the best sample more than on the worst (worst - best > 0); a method that only spreads
the distribution raises L on every sample alike; SFT lowers it on real motions. First it prints the base's own
error on the three, the scale the changes are read against (a model denoises its own samples far more easily than
real motions). Analysis only: the oracle here measures, it trains nothing.
"""

from __future__ import annotations

import argparse
import sys
from typing import NoReturn

import numpy as np
import torch
from rich.console import Console
from rich.table import Table

from sopo_ray.config import load_config
from sopo_ray.data import load_dataset
from sopo_ray.data.synthetic.oracle import oracle_score
from sopo_ray.errors import SopoError
from sopo_ray.evaluation.metrics import sample_mean_ci
from sopo_ray.models.generator import MotionGenerator, load_generator


def fail(problem: str) -> NoReturn:
    """One error line, exit 2 (as the sopo commands do)."""
    print(f"error: {problem}", file=sys.stderr)
    raise SystemExit(2)


def pick_groups(base: MotionGenerator, data, captions: int, k: int, seed: int, steps: int, guidance: float):
    """(captions, lengths, real, best, worst) over the groups whose oracle scores are not all equal."""
    rng = np.random.default_rng(seed)
    idx = rng.choice(len(data), min(captions, len(data)), replace=False)
    texts = [data.captions[i][0] for i in idx]
    lengths = np.asarray(data.lengths)[idx]
    seeds = rng.integers(0, 2**31 - 1, size=len(idx) * k).tolist()
    samples = base.generate([t for t in texts for _ in range(k)], np.repeat(lengths, k), seeds, steps=steps,
                            guidance=guidance).numpy().reshape(len(idx), k, -1, data.features.shape[-1])
    keep, best, worst = [], [], []
    for g, i in enumerate(idx):
        scores = [oracle_score(samples[g, j, : lengths[g]], data.params[i]).score for j in range(k)]
        if max(scores) > min(scores):
            keep.append(g)
            best.append(samples[g, int(np.argmax(scores))])
            worst.append(samples[g, int(np.argmin(scores))])
    if not keep:
        fail(f"the oracle scores of all {len(idx)} groups tie (every sample scores the same); pass more --captions "
             "or a better-trained --base")
    keep_idx = idx[keep]
    real = np.asarray(data.features[keep_idx, : samples.shape[2]], dtype=np.float32)
    return ([texts[g] for g in keep], torch.from_numpy(lengths[keep].astype(np.int64)), torch.from_numpy(real),
            torch.from_numpy(np.stack(best)), torch.from_numpy(np.stack(worst)))


@torch.no_grad()
def denoising_error(model: MotionGenerator, base: MotionGenerator, texts: list[str], lengths: torch.Tensor,
                    motions: torch.Tensor, draws: int, seed: int) -> np.ndarray:
    """Mean over `draws` (t, noise) of `model`'s denoising error per motion [N], in the base's model space; the
    draws depend only on `seed`, so two models are measured at the same ones."""
    x0, mask = base.to_model_space(motions, lengths)
    emb = base.encode_text(texts)
    gen = torch.Generator().manual_seed(seed)
    total = torch.zeros(x0.shape[0], dtype=torch.float64)
    for _ in range(draws):
        t = torch.randint(0, base.num_timesteps, (x0.shape[0],), generator=gen)
        noise = torch.randn(x0.shape, generator=gen)
        total += model.denoise_error(x0, mask, t, noise, emb).double()
    return (total / draws).numpy()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="configs/default.yaml")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config key (repeatable)")
    parser.add_argument("--base", default=None, help="base checkpoint (default: {workdir}/base/<kind>/base.pt)")
    parser.add_argument("--policy", action="append", required=True, help="aligned checkpoint, repeatable")
    parser.add_argument("--split", default="test")
    parser.add_argument("--captions", type=int, default=200)
    parser.add_argument("--k", type=int, default=4)
    parser.add_argument("--t-draws", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    from sopo_ray import artifacts

    try:
        cfg = load_config(args.config, args.overrides)
    except SopoError as exc:
        fail(str(exc))
    torch.set_num_threads(cfg.torch_threads or 1)
    data = load_dataset(cfg.data, args.split)
    if data.params is None:
        fail("the oracle needs the embedded dataset's caption parameters; use a config with data.source: synthetic")
    base, _ = load_generator(args.base or artifacts.base_path(cfg), data.data_id)
    texts, lengths, real, best, worst = pick_groups(base, data, args.captions, args.k, args.seed,
                                                    cfg.diffusion.rollout_sample_steps, cfg.diffusion.guidance_scale)
    motions = {"real": real, "best": best, "worst": worst}
    own = {name: denoising_error(base, base, texts, lengths, m, args.t_draws, args.seed) * 1000
           for name, m in motions.items()}
    print(f"the base's own denoising error (x1000): real motion {own['real'].mean():.1f}, oracle-best sample "
          f"{own['best'].mean():.1f}, oracle-worst sample {own['worst'].mean():.1f}")
    table = Table(title=f"err_policy - err_base on the base's own samples ({len(texts)} {args.split} groups with "
                        f"distinct oracle scores, K = {args.k}, {args.t_draws} (t, noise) draws; x1000)")
    for col in ("policy", "real motion", "oracle-best sample", "oracle-worst sample", "worst - best (95% CI)"):
        table.add_column(col, justify="left" if col == "policy" else "right")
    for path in args.policy:
        policy, _ = load_generator(path, data.data_id)
        change = {name: denoising_error(policy, base, texts, lengths, m, args.t_draws, args.seed) * 1000 - own[name]
                  for name, m in motions.items()}
        gap, ci = sample_mean_ci(change["worst"] - change["best"])
        table.add_row(path, f"{change['real'].mean():+.2f}", f"{change['best'].mean():+.2f}",
                      f"{change['worst'].mean():+.2f}", f"{gap:+.2f} ± {ci:.2f}")
    Console(width=200).print(table)


if __name__ == "__main__":
    main()
