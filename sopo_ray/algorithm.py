"""One SoPo round as plain functions, without Ray: read this file first.

    sample_groups     the policy samples K motions per caption; the reward scores them; x^l = argmin r (Eq. 10,
                      `pick_pairs`)
    preference_batch  x^w from the dataset (SoPo, SFT) or the best sample (online DPO); x^l and r(x^l, c)
    preference_terms  policy and reference denoising errors on x^w and x^l at one shared t and noise (Eq. 15)
    build_models      policy (its denoiser trains), frozen reference and AdamW, from the base model's checkpoint
    train_on_batch    objectives.objective_loss (SoPo Eq. 17 or a baseline), backward, clip, AdamW step
    the schedule      step s trains with the policy of version s // sync_interval; its groups were sampled by a
                      version at most max_staleness older (`distributed.schedule`, enforced by
                      `distributed.ticket_board.TicketBoard`)

The single-process loop (`sopo_ray.local_loop`, `sopo align --local`) strings these together; the Ray trainer
runs the same functions in its actors (`distributed.rollout.RolloutWorker` samples, `distributed.learner.Learner`
trains), so both train on the same pairs the same way.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from sopo_ray.config import Config
from sopo_ray.data.synthetic.oracle import oracle_score
from sopo_ray.distributed.group import CaptionRef, RolloutGroup, caption_table
from sopo_ray.distributed.seeds import derive_seed, sample_seeds
from sopo_ray.lr_schedule import warmup_cosine
from sopo_ray.models.generator import generator_from_payload
from sopo_ray.objectives import PreferenceTerms, objective_loss, pair_sources, preferred_weight, resolve_tau

# ---------------------------------------------------------------------------------------------------------
# Rollout: sample K, score, pick
# ---------------------------------------------------------------------------------------------------------


def pick_pairs(rewards: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(best [B], worst [B]) sample index of each group's rewards [B, K]; paper Eq. 10: x^l = argmin_k r(x^k, c).

    NaN/inf rewards are never picked while the group has a finite one (ties go to the first index, as the
    released code takes sample 1 when s_1 <= s_2); a group with none gets index 0 for both and keeps its NaN
    r(x^l, c), so the replay queue and the trainer count it as non-finite instead of training on it.
    """
    rewards = np.asarray(rewards, dtype=np.float64)
    if rewards.ndim != 2 or rewards.shape[1] < 2:
        raise ValueError(f"rewards must be [B, K] with K >= 2, got {rewards.shape}")
    finite = np.isfinite(rewards)
    return (np.argmax(np.where(finite, rewards, -np.inf), axis=1),
            np.argmin(np.where(finite, rewards, np.inf), axis=1))


@torch.no_grad()
def sample_groups(policy: Any, reward: Any, features: np.ndarray, lengths: np.ndarray, refs: list[CaptionRef],
                  *, version: int, k: int, steps: int, guidance: float, eta: float, run_seed: int, keep_best: bool,
                  positions: list[int] | None = None, ticket: int = -1, worker: str = "",
                  params: list[dict] | None = None) -> list[RolloutGroup]:
    """Sample K motions for each caption in `refs` with `policy`, score them, and reduce each to a RolloutGroup.

    `features` [N, T, D] / `lengths` [N]: the split the captions index (x^w is `features[ref.motion_index]`).
    Every sample's noise comes only from `sample_seeds(run_seed, caption_id, k, version)`, so the result does not
    depend on the worker, the batch or the timing. `reward.score` ranks and gates; `reward.motion_similarity`
    of x^w to each sample feeds beta_w. With `params` (the split's caption parameters, embedded data) every sample
    also gets its oracle score, for diagnostics only.
    """
    n = len(refs)
    motion_idx = np.array([r.motion_index for r in refs], dtype=np.int64)
    lens = np.repeat(np.asarray(lengths)[motion_idx].astype(np.int64), k)            # [n*K]
    captions = [r.text for r in refs for _ in range(k)]                              # [n*K]
    seeds = [s for r in refs for s in sample_seeds(run_seed, r.caption_id, k, version)]
    text_emb = policy.encode_text([r.text for r in refs]).repeat_interleave(k, dim=0)
    samples = policy.sample(text_emb, torch.from_numpy(lens), seeds, steps=steps, guidance=guidance, eta=eta)
    samples = samples.detach().cpu().float()                                         # [n*K, T, D]
    t_max = samples.shape[1]
    x_w = torch.from_numpy(np.array(features[np.repeat(motion_idx, k), :t_max], dtype=np.float32))
    rewards = reward.score(samples, lens, captions, motion_index=np.repeat(motion_idx, k))
    rewards = rewards.float().cpu().reshape(n, k).numpy()
    sims = reward.motion_similarity(x_w, lens, samples, lens).float().cpu().reshape(n, k).numpy()
    samples_np = samples.numpy().reshape(n, k, t_max, -1)
    oracle = None
    if params is not None:
        oracle = np.array([oracle_score(samples_np[i, j, :lens[i * k]], params[motion_idx[i]]).score
                           for i in range(n) for j in range(k)], dtype=np.float32).reshape(n, k)
    created = time.time()
    best, worst = pick_pairs(rewards)
    groups = []
    for i, ref in enumerate(refs):
        length, winner, loser = int(lens[i * k]), int(best[i]), int(worst[i])
        groups.append(RolloutGroup(
            caption_id=ref.caption_id, caption=ref.text, motion_index=ref.motion_index, length=length,
            x_l=np.ascontiguousarray(samples_np[i, loser, :length]), rewards=rewards[i].astype(np.float32),
            sims_w=sims[i].astype(np.float32), loser=loser, winner=winner, policy_version=version,
            seeds=np.asarray(seeds[i * k:(i + 1) * k], dtype=np.int64), created_at=created, ticket=ticket,
            position=positions[i] if positions is not None else -1, worker=worker,
            x_best=np.ascontiguousarray(samples_np[i, winner, :length]) if keep_best else None,
            oracle=None if oracle is None else oracle[i],
        ).validate())
    return groups


CALIBRATION_CAPTIONS = 256
"""Train captions whose base-policy groups calibrate tau for `objective.tau_gate` (the quantile of 256 groups is
within about +-0.03 of the target fraction)."""


def calibrate_tau(cfg: Config, base: Any, reward: Any, train: Any) -> float:
    """The run's tau (`objectives.resolve_tau`): objective.tau, a quantile of r(x^w, c) over up to 512 train pairs
    (tau_quantile), or a quantile of min_k r over the base policy's groups of 256 train captions (tau_gate)."""
    o = cfg.objective
    rng = np.random.default_rng(derive_seed(cfg.seed, "tau"))
    if o.tau_quantile is not None:
        idx = rng.choice(len(train), min(512, len(train)), replace=False)
        scores = reward.score(train.features[idx], train.lengths[idx], [train.captions[i][0] for i in idx],
                              motion_index=idx)
        return resolve_tau(o, dataset_rewards=scores)
    if o.tau_gate is not None:
        table = caption_table(train.motion_ids, train.captions)
        picks = rng.choice(len(table), min(CALIBRATION_CAPTIONS, len(table)), replace=False)
        groups = sample_groups(base, reward, train.features, train.lengths, [table[i] for i in picks], version=0,
                               k=o.k, steps=cfg.diffusion.rollout_sample_steps, guidance=cfg.diffusion.guidance_scale,
                               eta=cfg.diffusion.rollout_ddim_eta, run_seed=derive_seed(cfg.seed, "tau"),
                               keep_best=False)
        return resolve_tau(o, worst_rewards=np.array([g.reward_l for g in groups]))
    return o.tau


# ---------------------------------------------------------------------------------------------------------
# The preference batch
# ---------------------------------------------------------------------------------------------------------


@dataclass
class PreferenceBatch:
    """One learner step's pairs; tensors on CPU, motions padded to the dataset's max frames."""

    captions: list[str]
    x_w: Tensor
    """[B, T, D] un-normalised preferred motions."""
    len_w: Tensor
    """[B] frames of x^w."""
    x_l: Tensor | None
    """[B, T, D] un-normalised unpreferred motions (None for SFT)."""
    len_l: Tensor | None
    """[B] frames of x^l."""
    reward_l: Tensor | None
    """[B] r(x^l, c)."""
    sims_w: Tensor | None
    """[B, K] similarity of x^w to each online sample (beta_w)."""
    staleness: list[int]
    """Per pair: learner version minus the version that sampled x^l (empty without rollouts)."""
    group_metrics: dict[str, float]
    """What the groups say about the policy and the reward (`group_metrics`); empty without rollouts."""


def _pad(arrays: list[np.ndarray], t_max: int) -> Tensor:
    out = np.zeros((len(arrays), t_max, arrays[0].shape[-1]), dtype=np.float32)
    for i, a in enumerate(arrays):
        out[i, : a.shape[0]] = a
    return torch.from_numpy(out)


def preference_batch(objective: str, items: list[RolloutGroup] | list[CaptionRef], features: np.ndarray,
                     lengths: np.ndarray, staleness: list[int] | None = None) -> PreferenceBatch:
    """A PreferenceBatch for `objective` from groups (or caption refs for SFT) and the split they index:
    x^w and x^l come from where `objectives.pair_sources(objective)` says."""
    preferred, unpreferred = pair_sources(objective)
    t_max = features.shape[1]
    if preferred == "dataset":
        idx = np.array([it.motion_index for it in items], dtype=np.int64)
        x_w = torch.from_numpy(np.array(features[idx], dtype=np.float32))
        len_w = torch.from_numpy(np.asarray(lengths)[idx].astype(np.int64))
    else:
        x_w = _pad([g.x_best for g in items], t_max)
        len_w = torch.tensor([g.length for g in items], dtype=torch.long)
    captions = [it.caption if isinstance(it, RolloutGroup) else it.text for it in items]
    if unpreferred is None:
        return PreferenceBatch(captions, x_w, len_w, None, None, None, None, [], {})
    groups: list[RolloutGroup] = items  # type: ignore[assignment]
    return PreferenceBatch(
        captions, x_w, len_w, x_l=_pad([g.x_l for g in groups], t_max),
        len_l=torch.tensor([g.length for g in groups], dtype=torch.long),
        reward_l=torch.tensor([g.reward_l for g in groups], dtype=torch.float32),
        sims_w=torch.from_numpy(np.stack([g.sims_w for g in groups]).astype(np.float32)),
        staleness=list(staleness or []), group_metrics=group_metrics(groups))


def group_metrics(groups: list[RolloutGroup]) -> dict[str, float]:
    """Mean reward of all samples, of each group's best and of x^l; with oracle scores (embedded data) also the
    oracle's view: mean, of x^l, of the reward's best, of its own best, and the reward's pairwise agreement
    with it (`reward.diagnostics`) on these very samples."""
    from sopo_ray.reward.diagnostics import pairwise_agreement

    rewards = np.stack([g.rewards for g in groups]).astype(np.float64)
    out = {"reward/mean": float(rewards.mean()), "reward/best": float(rewards.max(axis=1).mean()),
           "reward/x_l": float(np.mean([g.reward_l for g in groups]))}
    if all(g.oracle is not None for g in groups):
        oracle = np.stack([g.oracle for g in groups]).astype(np.float64)
        rows = np.arange(len(groups))
        agree, pairs = pairwise_agreement(rewards, oracle)
        out.update({"oracle/mean": float(oracle.mean()),
                    "oracle/x_l": float(oracle[rows, [g.loser for g in groups]].mean()),
                    "oracle/reward_best": float(oracle[rows, [g.winner for g in groups]].mean()),
                    "oracle/best": float(oracle.max(axis=1).mean()),
                    "oracle/agreement": float(agree.sum() / pairs.sum()) if pairs.sum() else float("nan")})
    return out


# ---------------------------------------------------------------------------------------------------------
# The learner step
# ---------------------------------------------------------------------------------------------------------


class PolicyErrors(nn.Module):
    """The policy's denoising errors on x^w and x^l in one forward pass, so DDP sees one graph per step."""

    def __init__(self, policy: nn.Module) -> None:
        super().__init__()
        self.policy = policy

    def forward(self, x0_w: Tensor, mask_w: Tensor, x0_l: Tensor | None, mask_l: Tensor | None, t: Tensor,
                noise: Tensor, text_emb: Tensor, keep_cond: Tensor) -> tuple[Tensor, Tensor | None]:
        err_w = self.policy.denoise_error(x0_w, mask_w, t, noise, text_emb, keep_cond)
        err_l = None if x0_l is None else self.policy.denoise_error(x0_l, mask_l, t, noise, text_emb, keep_cond)
        return err_w, err_l


def preference_terms(cfg: Config, model: nn.Module, policy: Any, reference: Any, batch: PreferenceBatch,
                     gen: torch.Generator, device: torch.device | str) -> PreferenceTerms:
    """Policy and reference errors at one shared (t, noise) per pair, plus r(x^l, c) and beta_w.

    `model` is `PolicyErrors(policy)` (as Ray Train's `prepare_model` returns it, or bare in a plain loop);
    `reference` the frozen base model. t, noise and the condition-dropout mask come from `gen` (CPU), so one seed
    fixes the step.
    """
    text_emb = policy.encode_text(batch.captions)
    with torch.no_grad():
        x0_w, mask_w = reference.to_model_space(batch.x_w, batch.len_w)
        x0_l, mask_l = (None, None) if batch.x_l is None else reference.to_model_space(batch.x_l, batch.len_l)
    n = x0_w.shape[0]
    t = torch.randint(0, policy.num_timesteps, (n,), generator=gen).to(device)
    noise = torch.randn(x0_w.shape, generator=gen).to(device)
    # As in pretraining, a fraction of pairs is trained unconditioned (same pairs for policy and reference),
    # so the unconditional branch that classifier-free guidance subtracts moves with the conditional one.
    keep = (torch.rand(n, generator=gen) >= cfg.model.cond_drop_prob).to(device)
    err_w, err_l = model(x0_w, mask_w, x0_l, mask_l, t, noise, text_emb, keep)
    if x0_l is None:
        return PreferenceTerms(err_w_theta=err_w)
    with torch.no_grad():
        ref_w = reference.denoise_error(x0_w, mask_w, t, noise, text_emb, keep)
        ref_l = reference.denoise_error(x0_l, mask_l, t, noise, text_emb, keep)
    beta_w = preferred_weight(cfg.objective, batch.sims_w.to(device))
    return PreferenceTerms(err_w, ref_w, err_l, ref_l, batch.reward_l.to(device), beta_w)


def timed(stages: dict[str, float], name: str, t0: float) -> float:
    """Add the seconds since `t0` to `stages[name]`; returns now (the next stage's t0)."""
    now = time.perf_counter()
    stages[name] = stages.get(name, 0.0) + now - t0
    return now


def trainable(policy: Any) -> list[nn.Parameter]:
    """Freeze everything but the denoiser (an MLD's VAE and the text encoder stay fixed); its parameters."""
    policy.requires_grad_(False)
    params = policy.trainable_parameters()
    for p in params:
        p.requires_grad_(True)
    return params


@dataclass
class Models:
    """What a trainer holds for its steps."""

    policy: Any
    """The MotionGenerator being aligned (only its denoiser trains)."""
    reference: Any
    """A frozen copy of the base model."""
    params: list[nn.Parameter]
    """The policy's trainable parameters."""
    model: nn.Module
    """`PolicyErrors(policy)`, as the trainer calls it (wrapped for DDP in a Ray Train learner)."""
    optimizer: torch.optim.Optimizer
    """AdamW over `params` (optimizer.lr, optimizer.weight_decay)."""


def build_models(cfg: Config, payload: dict[str, Any], device: torch.device | str = "cpu",
                 wrap: Callable[[nn.Module], nn.Module] = lambda m: m) -> Models:
    """Policy and reference from the base model's checkpoint `payload` on `device`, the policy's trainable
    parameters, `wrap(PolicyErrors(policy))` and AdamW: what the learner, the local loop and the benches train."""
    policy = generator_from_payload(payload).to(device).eval()
    reference = generator_from_payload(payload).to(device).eval().requires_grad_(False)
    params = trainable(policy)
    model = wrap(PolicyErrors(policy))
    optimizer = torch.optim.AdamW(params, lr=cfg.optimizer.lr, weight_decay=cfg.optimizer.weight_decay)
    return Models(policy, reference, params, model, optimizer)


def train_on_batch(cfg: Config, step: int, model: nn.Module, policy: Any, reference: Any,
                   optimizer: torch.optim.Optimizer, params: list[nn.Parameter], batch: PreferenceBatch,
                   gen: torch.Generator, device: torch.device | str, tau: float,
                   stages: dict[str, float], any_rank: Any = bool) -> tuple[bool, dict[str, float]]:
    """One optimizer step at learner step `step` (0-based): loss, backward, clip, then AdamW at the learning rate of
    `lr_schedule.warmup_cosine` (linear warm-up to optimizer.lr, cosine decay to 0 at schedule.total_steps).

    The step is skipped (gradients dropped) when the loss or gradient norm is NaN/inf; `any_rank(flag)` makes
    that decision the same on every DDP rank. Returns (applied, metrics: the objective's `loss/*` plus
    `loss/grad_norm` and `loss/lr`); stage seconds are added to `stages` (forward, loss, backward, update).
    """
    t = time.perf_counter()
    terms = preference_terms(cfg, model, policy, reference, batch, gen, device)
    t = timed(stages, "forward", t)
    loss, loss_metrics = objective_loss(cfg.objective, terms, tau, policy.num_timesteps)
    t = timed(stages, "loss", t)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    grad_norm = torch.nn.utils.clip_grad_norm_(params, cfg.optimizer.grad_clip or float("inf"))
    t = timed(stages, "backward", t)
    applied = not any_rank(not (torch.isfinite(loss) and torch.isfinite(grad_norm)))
    if applied:
        for group in optimizer.param_groups:
            group["lr"] = warmup_cosine(step, cfg.schedule.total_steps, cfg.optimizer.warmup_steps, cfg.optimizer.lr)
        optimizer.step()
    else:
        optimizer.zero_grad(set_to_none=True)
    timed(stages, "update", t)
    metrics = {**{f"loss/{k}": v for k, v in loss_metrics.items()}, "loss/grad_norm": float(grad_norm),
               "loss/lr": optimizer.param_groups[0]["lr"]}
    return applied, metrics
