"""The baselines SoPo is compared against, in the same harness (paper Table 1), and the pair selection they share.

- SFT: the plain diffusion loss on the preferred (dataset) motion, err_theta(x^w); no reference, no x^l.
- Offline DPO, in the style of MoDiPO-T/G (paper Eq. 7-8): Diffusion-DPO on pairs built ONCE from the reference
  model's samples (x^w = argmax_k r, x^l = argmin_k r over K generations per caption) and never refreshed.
- Online DPO, in the style of MoDiPO-O (paper Eq. 5-6, Theorem 2): Diffusion-DPO on the best vs the worst of the
  CURRENT policy's K samples, every step, with no threshold and no offline x^w.

Both DPO baselines use `diffusion_dpo.diffusion_dpo_loss`; they differ only in which samples the trainer passes in,
which `best_and_worst` picks from a group's rewards (SoPo uses its `worst` half).
"""

from __future__ import annotations

from torch import Tensor


def sft_loss(err_w_theta: Tensor) -> Tensor:
    """Per-sample supervised diffusion loss on x^w ([B]): the policy's masked denoising error, nothing else."""
    return err_w_theta


def best_and_worst(rewards: Tensor) -> tuple[Tensor, Tensor]:
    """Indices of the highest- and lowest-reward sample of each group: rewards [B, K] -> (best [B], worst [B]).

    Paper Eq. 10: x^l = argmin_k r(x^k, c). Ties go to the first index (the released code takes sample 1 when
    s_1 <= s_2). A NaN reward is selected by both argmax and argmin, so it reaches the loss instead of hiding.
    """
    if rewards.ndim != 2 or rewards.shape[1] < 2:
        raise ValueError(f"rewards must be [B, K] with K >= 2, got {tuple(rewards.shape)}")
    return rewards.argmax(dim=1), rewards.argmin(dim=1)
