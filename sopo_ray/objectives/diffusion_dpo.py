"""Diffusion-DPO (Wallace et al. 2024), the per-sample building block of every preference loss here.

For a diffusion model the log-likelihood ratio h_theta(x, c) = log pi_theta(x|c) / pi_ref(x|c) of DPO (paper Eq. 2)
is intractable; Diffusion-DPO replaces it by a per-timestep bound (SoPo paper, App. Lemma 3 / Eq. S27):

    L(theta, ref, x_t) = ||target - f_theta(x_t, t, c)||^2 - ||target - f_ref(x_t, t, c)||^2

where the two errors are the masked mean denoising errors of the policy and of the frozen reference on the same
noised input (same t, same noise). The target is eps for an eps-predicting model and x_0 for an x_0-predicting one
(MDM); the model code computes the errors and this module only combines them, so it serves both.
A lower L means the policy explains x better than the reference does: -T * w_t * beta * L is the implicit reward.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def dpo_difference(err_theta: Tensor, err_ref: Tensor) -> Tensor:
    """L(theta, ref, x_t) = err_theta - err_ref per sample ([B] -> [B]); paper Eq. 15-17 and App. Eq. S27.

    The reference error is detached, so no gradient reaches the reference model even when the caller forgot
    `torch.no_grad()`. Non-finite values pass through unchanged: the trainer counts and skips such steps.
    """
    return err_theta - err_ref.detach()


def implicit_reward(diff: Tensor, scale: float | Tensor) -> Tensor:
    """Diffusion-DPO implicit reward -scale * L(theta, ref, x_t) per sample, with scale = T * w_t * beta ([B])."""
    return -scale * diff


def diffusion_dpo_logit(diff_w: Tensor, diff_l: Tensor, beta: float, scale: float) -> Tensor:
    """The Diffusion-DPO logit -T * w_t * beta * (L^w - L^l) per sample ([B]); App. Eq. S27.

    `diff_w`, `diff_l` are `dpo_difference` of the preferred and unpreferred sample (same t and noise); `scale` is
    T * w_t (`sopo.dpo_scale`).
    """
    return -scale * beta * (diff_w - diff_l)


def diffusion_dpo_loss(diff_w: Tensor, diff_l: Tensor, beta: float, scale: float) -> Tensor:
    """Per-sample Diffusion-DPO loss -log sigmoid(`diffusion_dpo_logit`) ([B]). This is the loss of both DPO
    baselines; they differ only in where x^w and x^l come from (`sopo_ray.objectives.registry`)."""
    return -F.logsigmoid(diffusion_dpo_logit(diff_w, diff_l, beta, scale))


def pair_accuracy(diff_w: Tensor, diff_l: Tensor) -> Tensor:
    """Fraction of pairs whose implicit reward ranks x^w above x^l, i.e. L^w < L^l (a scalar tensor)."""
    return (diff_w < diff_l).to(torch.float32).mean()
