"""Gradients of every objective reach the policy and never the reference, with a real (tiny) denoiser."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from sopo_ray.config import ObjectiveConfig
from sopo_ray.objectives import PreferenceTerms, objective_loss, preferred_weight

B, T, C = 6, 5, 3


class TinyDenoiser(nn.Module):
    """x0-predicting MLP on [B, T, C] motions, conditioned on the timestep."""

    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(C + 1, 16), nn.SiLU(), nn.Linear(16, C))

    def denoise_error(self, x0: torch.Tensor, mask: torch.Tensor, t: torch.Tensor, noise: torch.Tensor):
        """Masked mean ||x0 - f(x_t, t)||^2 per sample ([B]), x_t = sqrt(a) x0 + sqrt(1 - a) noise."""
        alpha = (1.0 - t.float() / 10.0)[:, None, None]
        x_t = alpha.sqrt() * x0 + (1 - alpha).sqrt() * noise
        tt = t.float()[:, None, None].expand(-1, x0.shape[1], 1) / 10.0
        pred = self.net(torch.cat([x_t, tt], dim=-1))
        sq = ((pred - x0) ** 2).mean(-1) * mask
        return sq.sum(1) / mask.sum(1)


def make_terms(policy: nn.Module, ref: nn.Module, cfg: ObjectiveConfig, reward_l: torch.Tensor,
               ref_no_grad: bool) -> PreferenceTerms:
    gen = torch.Generator().manual_seed(3)
    x_w, x_l, noise = (torch.randn(B, T, C, generator=gen) for _ in range(3))
    mask = torch.ones(B, T)
    mask[0, 3:] = 0.0
    t = torch.randint(0, 10, (B,), generator=gen)
    with torch.set_grad_enabled(not ref_no_grad):
        err_w_ref, err_l_ref = ref.denoise_error(x_w, mask, t, noise), ref.denoise_error(x_l, mask, t, noise)
    sims = torch.rand(B, 2, generator=gen)
    return PreferenceTerms(err_w_theta=policy.denoise_error(x_w, mask, t, noise), err_w_ref=err_w_ref,
                           err_l_theta=policy.denoise_error(x_l, mask, t, noise), err_l_ref=err_l_ref,
                           reward_l=reward_l, beta_w=preferred_weight(cfg, sims))


@pytest.mark.parametrize("name", ["sopo", "online_dpo", "offline_dpo", "sft"])
@pytest.mark.parametrize("frozen_ref", [True, False])
def test_gradient_reaches_policy_only(name: str, frozen_ref: bool):
    torch.manual_seed(0)
    policy = TinyDenoiser()
    ref = copy.deepcopy(policy)
    if frozen_ref:
        ref.requires_grad_(False)
    with torch.no_grad():                       # policy != ref, so the DPO differences are not all zero
        for p in policy.parameters():
            p.add_(0.05 * torch.randn_like(p))
    cfg = ObjectiveConfig(name=name)
    reward_l = torch.tensor([0.1, 0.2, 0.3, 0.5, 0.6, 0.9])
    # frozen_ref=False also computes the reference errors WITH autograd: the objective must still cut them off
    terms = make_terms(policy, ref, cfg, reward_l, ref_no_grad=frozen_ref)
    loss, metrics = objective_loss(cfg, terms, num_timesteps=50)
    loss.backward()
    assert torch.isfinite(loss) and metrics["loss"] == pytest.approx(loss.item())
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in policy.parameters())
    assert sum(float(p.grad.abs().sum()) for p in policy.parameters()) > 0
    assert all(p.grad is None for p in ref.parameters())


@pytest.mark.parametrize("name", ["sopo", "sft"])
def test_no_gradient_through_x_l_when_unused(name: str):
    """SFT never uses x^l; SoPo drops it when every r(x^l, c) >= tau."""
    torch.manual_seed(1)
    policy, ref = TinyDenoiser(), TinyDenoiser().requires_grad_(False)
    cfg = ObjectiveConfig(name=name, tau=0.45)
    terms = make_terms(policy, ref, cfg, torch.full((B,), 0.45), ref_no_grad=True)
    terms.err_l_theta.retain_grad()
    terms.err_w_theta.retain_grad()
    objective_loss(cfg, terms, num_timesteps=50)[0].backward()
    assert terms.err_l_theta.grad is None or not terms.err_l_theta.grad.any()
    assert terms.err_w_theta.grad.abs().sum() > 0
