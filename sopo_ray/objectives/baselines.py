"""The baselines SoPo is compared against, in the same harness (paper Table 1), and the pair selection they share.

- SFT: the plain diffusion loss on the preferred (dataset) motion, err_theta(x^w); no reference, no x^l.
- Offline DPO, in the style of MoDiPO-T/G (paper Eq. 7-8): Diffusion-DPO on pairs built ONCE from the reference
  model's samples (x^w = argmax_k r, x^l = argmin_k r over K generations per caption) and never refreshed.
- Online DPO, in the style of MoDiPO-O (paper Eq. 5-6, Theorem 2): Diffusion-DPO on the best vs the worst of the
  CURRENT policy's K samples, every step, with no threshold and no offline x^w.

Both DPO baselines use `diffusion_dpo.diffusion_dpo_loss`; they differ only in which samples the trainer passes in
(`sopo_ray.algorithm.pick_pairs` picks the best and worst of a group; SoPo uses the worst).
"""

from __future__ import annotations

from torch import Tensor


def sft_loss(err_w_theta: Tensor) -> Tensor:
    """Per-sample supervised diffusion loss on x^w ([B]): the policy's masked denoising error, nothing else."""
    return err_w_theta
