"""The toy's alignment: three methods fine-tune the same reference with the same budget (steps, batch, learning
rate) and the project's own losses (`sopo_ray.objectives.objective_loss`): offline DPO (fixed offline pairs),
online DPO (best vs worst of the current policy's K samples, MoDiPO-O style) and SoPo (offline preferred vs the
policy's worst sample, gated by tau). Where x^w and x^l come from is `objectives.objective(method)`'s.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from sopo_ray.algorithm import pick_pairs
from sopo_ray.config import ObjectiveConfig
from sopo_ray.objectives import PreferenceTerms, objective, objective_loss, preferred_weight, resolve_tau
from sopo_ray.toy.policy import ToyDiffusion, pretrain_reference
from sopo_ray.toy.world import METHODS, MODE_COV, MODES, ToySettings, World, build_world, true_preference


def objective_config(method: str, settings: ToySettings) -> ObjectiveConfig:
    """The ObjectiveConfig of one toy method (SoPo with the similarity weight, tau from a quantile)."""
    return ObjectiveConfig(name=method, k=settings.k, beta=settings.beta, timestep_weight=settings.timestep_weight,
                           beta_w="similarity", beta_w_c=settings.beta_w_c, tau_quantile=settings.tau_quantile)


def align(method: str, reference: ToyDiffusion, world: World, settings: ToySettings, tau: float,
          ) -> tuple[ToyDiffusion, list[dict[str, float]]]:
    """Fine-tune a copy of `reference` with `method` for `settings.steps` steps.

    Returns the policy and, every `curve_every` steps, the step's loss metrics plus the mean true preference and
    spread of 500 fresh samples (the learning curves).
    """
    cfg, spec = objective_config(method, settings), objective(method)
    torch.manual_seed(settings.seed + 2)
    gen = torch.Generator().manual_seed(settings.seed + 2)
    policy = copy.deepcopy(reference).requires_grad_(True)
    opt = torch.optim.Adam(policy.parameters(), lr=settings.lr)
    rows = torch.arange(settings.batch_size)
    history = []
    for step in range(settings.steps):
        idx = torch.randint(0, settings.n_offline, (settings.batch_size,), generator=gen)
        beta_w = None
        if spec.source == "fixed_pairs":
            x_w, x_l = world.preferred[idx], world.unpreferred[idx]
            reward_l = world.reward(x_l)
        else:
            group = policy.sample(settings.batch_size * settings.k, gen).view(settings.batch_size, settings.k, 2)
            rewards = world.reward(group.view(-1, 2)).view(settings.batch_size, settings.k)
            best, worst = (torch.from_numpy(i) for i in pick_pairs(rewards.detach().numpy()))
            x_l, reward_l = group[rows, worst], rewards[rows, worst]
            if spec.preferred == "best_sample":
                x_w = group[rows, best]
            else:                                  # SoPo: the offline preferred point, weighted by beta_w
                x_w = world.preferred[idx]
                sims = torch.exp(-0.5 * ((x_w[:, None] - group) ** 2).sum(-1))
                beta_w = preferred_weight(cfg, sims)
        t = torch.randint(0, policy.steps, (settings.batch_size,), generator=gen)
        noise = torch.randn(settings.batch_size, 2, generator=gen)
        with torch.no_grad():
            err_w_ref, err_l_ref = reference.denoise_error(x_w, t, noise), reference.denoise_error(x_l, t, noise)
        terms = PreferenceTerms(err_w_theta=policy.denoise_error(x_w, t, noise), err_w_ref=err_w_ref,
                                err_l_theta=policy.denoise_error(x_l, t, noise), err_l_ref=err_l_ref,
                                reward_l=reward_l, beta_w=beta_w)
        loss, metrics = objective_loss(cfg, terms, tau=tau)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if (step + 1) % settings.curve_every == 0:
            points = policy.sample(500, torch.Generator().manual_seed(settings.seed + 3))
            metrics |= {"step": step + 1, "true_preference": float(true_preference(points).mean()),
                        "spread": float(points.std(dim=0).mean())}
            history.append(metrics)
    return policy.requires_grad_(False), history


def evaluate(samples: Tensor, reward: nn.Module) -> dict[str, float | list[float]]:
    """Mean true preference, mean reward, per-mode mass, modes covered, spread and low-preference mass."""
    pref = true_preference(samples)
    prec = torch.linalg.inv(MODE_COV)
    d = samples[:, None, :] - MODES[None]
    maha = torch.einsum("nmi,ij,nmj->nm", d, prec, d)
    mass = (maha < 4.0).float().mean(dim=0)                                  # within 2 sigma of each mode
    return {
        "mean_true_preference": float(pref.mean()),
        "mean_reward": float(reward(samples).mean()),
        "mode_mass": [round(float(m), 4) for m in mass],
        "modes_covered": int((mass >= 0.1).sum()),
        "spread": float(samples.std(dim=0).mean()),
        "frac_low_preference": float((pref < 0.05).float().mean()),
    }


# ---------------------------------------------------------------------------------------------------------
# One full run, and the summary over seeds
# ---------------------------------------------------------------------------------------------------------


@dataclass
class ToyResult:
    """Everything one seed of the toy produced."""

    settings: ToySettings
    world: World
    tau: float                            # the SoPo threshold, from the offline preferred set's rewards
    samples: dict[str, Tensor]            # "reference" and each method -> [eval_samples, 2] final samples
    metrics: dict[str, dict]              # same keys -> `evaluate` output; methods add "curve"


def run_toy(settings: ToySettings) -> ToyResult:
    """Build the world, pretrain the reference and align it with each method; deterministic in the seed."""
    world = build_world(settings)
    reference = pretrain_reference(settings)
    tau = resolve_tau(objective_config("sopo", settings), world.reward(world.preferred))
    samples = {"reference": reference.sample(settings.eval_samples, torch.Generator().manual_seed(settings.seed + 4))}
    metrics: dict[str, dict] = {"reference": evaluate(samples["reference"], world.reward)}
    for method in METHODS:
        policy, curve = align(method, reference, world, settings, tau)
        # the same sampling noise for every policy, so the panels differ only by the learned denoiser
        samples[method] = policy.sample(settings.eval_samples, torch.Generator().manual_seed(settings.seed + 4))
        metrics[method] = evaluate(samples[method], world.reward) | {"curve": curve}
    return ToyResult(settings, world, tau, samples, metrics)


SUMMARY_KEYS = ("mean_true_preference", "mean_reward", "modes_covered", "spread", "frac_low_preference")
"""The scalar metrics averaged over seeds."""


def summarize(results: list[ToyResult]) -> dict:
    """JSON-able summary: settings, per-seed metrics (with curves) and the mean of each scalar metric per method."""
    keys = ("reference", *METHODS)
    mean = {key: {name: sum(float(r.metrics[key][name]) for r in results) / len(results) for name in SUMMARY_KEYS}
            for key in keys}
    return {
        "settings": results[0].settings.model_dump(exclude={"seed"}),
        "seeds": [r.settings.seed for r in results],
        "mean": mean,
        "runs": [{"seed": r.settings.seed, "tau": r.tau, **r.metrics} for r in results],
    }
