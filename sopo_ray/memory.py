"""How much memory a run (or a `sopo generate` batch) needs, estimated from its config before anything starts,
and the check against the machine (or the cluster's largest node).

The big tensors of each stage grow with a handful of config values, so one typo (`objective.k=100000`) can ask
for terabytes. `estimate(cfg)` adds up the tensors that must be alive at once in each process, as float32:

    rollout worker   one batch of rollout_batch_size x K samples of max_frames frames: the DDIM state, one
                     denoiser layer's activations (twice the batch with classifier-free guidance), the decoded
                     features, the data motions x^w and the reward model's activations while scoring them
    learner rank     batch_size / num_learners preference pairs: the activations every layer keeps for the
                     backward pass of the policy on x^w and x^l, plus the frozen reference's forward
    evaluation       evaluator.generate_batch_size motions generated at once (the final evaluation)

plus `PROCESS_BYTES` for each process (torch, the text encoder, the models) and the object store's copy of the
train split. The sum is a lower bound of the real peak (it leaves out allocator slack and small tensors), so a run
it refuses cannot fit; docs/reliability.md compares it with measured peaks.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

from sopo_ray.config import Config
from sopo_ray.errors import ConfigError

FLOAT_BYTES = 4
FEATURE_DIM = 263
"""HumanML3D feature size (KIT-ML: 251); the estimate takes the larger."""
PROCESS_BYTES = 320 << 20
"""Memory one idle process of the run adds (torch, MiniLM and the models, its private pages): 320 MiB measured with
the default models on CPU; the ~240 MiB of libraries the processes share are counted once, in RAY_BYTES."""
RAY_BYTES = 750 << 20
"""Ray's own processes (GCS, raylet, agents: 370 MiB measured without the dashboard) plus the shared libraries."""


def _gib(n: float) -> str:
    for unit, shift in (("TiB", 40), ("GiB", 30)):
        if n >= 1 << shift:
            return f"{n / (1 << shift):.1f} {unit}"
    return f"{n / (1 << 20):.0f} MiB"


def _layer_peak(batch: int, tokens: int, width: int, ff: int, heads: int) -> int:
    """Floats one inference transformer layer holds at once: its input, the normed input, q, k, v and the
    attention output, the attention weights, the feed-forward hidden layer and its activation."""
    return batch * (tokens * (6 * width + 2 * ff) + heads * tokens * tokens)


def _layer_saved(batch: int, tokens: int, width: int, ff: int, heads: int) -> int:
    """Floats one training transformer layer keeps for backward (input, norms, q/k/v, attention output,
    attention weights and their dropout mask, feed-forward hidden layer and activation)."""
    return batch * (tokens * (8 * width + 2 * ff) + 2 * heads * tokens * tokens)


def sampling_bytes(cfg: Config, batch: int, guided: bool = True) -> int:
    """Peak bytes of generating `batch` motions at once with `cfg`'s model (DDIM, classifier-free guidance)."""
    m, frames = cfg.model, cfg.data.max_frames
    if m.kind == "mdm":
        seq, channels, tokens = frames, FEATURE_DIM, math.ceil(frames / m.frames_per_token) + 1
    else:
        seq, channels, tokens = m.vae_latent_tokens, m.vae_latent_dim, m.vae_latent_tokens + 1
    calls = 2 * batch if guided else batch
    state = 6 * batch * seq * channels        # x_t, x0, eps, the guided output and its two halves
    loop = state + _layer_peak(calls, tokens, m.latent_dim, m.ff_dim, m.num_heads)
    decode = 3 * batch * frames * FEATURE_DIM  # features, de-normalised, masked
    if m.kind == "mld":
        vae_tokens = math.ceil(frames / m.frames_per_token) + 2 * m.vae_latent_tokens + 1
        decode += _layer_peak(batch, vae_tokens, m.latent_dim, m.ff_dim, m.num_heads)
    return FLOAT_BYTES * max(loop, decode)


def scoring_bytes(cfg: Config, batch: int) -> int:
    """Peak bytes of scoring `batch` motions with the reward model (and their similarity to x^w), leaving out the
    motions themselves."""
    r, frames = cfg.reward, cfg.data.max_frames
    tokens = math.ceil(frames / r.frames_per_token) + 1
    motions = 3 * batch * frames * FEATURE_DIM  # x^w, and the normalised copies of it and of the samples
    return FLOAT_BYTES * (motions + _layer_peak(batch, tokens, r.latent_dim, 4 * r.latent_dim, r.num_heads))


def rollout_bytes(cfg: Config) -> int:
    """Peak bytes of one rollout batch (rollout_batch_size captions x objective.k samples)."""
    batch = cfg.schedule.rollout_batch_size * cfg.objective.k
    samples = FLOAT_BYTES * batch * cfg.data.max_frames * FEATURE_DIM
    guided = cfg.diffusion.guidance_scale not in (0.0, 1.0)
    return max(sampling_bytes(cfg, batch, guided), samples + scoring_bytes(cfg, batch))


def learner_bytes(cfg: Config) -> int:
    """Peak bytes of one learner step on one rank: policy forward with backward on x^w and x^l, reference forward."""
    m, s, frames = cfg.model, cfg.schedule, cfg.data.max_frames
    pairs = max(1, s.batch_size // cfg.cluster.num_learners)
    if m.kind == "mdm":
        tokens, seq, channels = math.ceil(frames / m.frames_per_token) + 1, frames, FEATURE_DIM
    else:
        tokens, seq, channels = m.vae_latent_tokens + 1, m.vae_latent_tokens, m.vae_latent_dim
    saved = m.num_layers * _layer_saved(2 * pairs, tokens, m.latent_dim, m.ff_dim, m.num_heads)
    reference = _layer_peak(2 * pairs, tokens, m.latent_dim, m.ff_dim, m.num_heads)
    inputs = 8 * pairs * max(seq * channels, frames * FEATURE_DIM)   # x^w, x^l, noise, x_t, targets
    return FLOAT_BYTES * (saved + reference + inputs)


def evaluation_bytes(cfg: Config) -> int:
    """Peak bytes of the final evaluation's generation batch (with the evaluator's embedding of it)."""
    batch = cfg.evaluator.generate_batch_size
    return sampling_bytes(cfg, batch, cfg.diffusion.guidance_scale not in (0.0, 1.0)) + scoring_bytes(cfg, batch)


def dataset_bytes(cfg: Config) -> int:
    """The train split's features in the object store (synthetic: about 90% of data.size motions)."""
    return FLOAT_BYTES * int(0.9 * cfg.data.size) * cfg.data.max_frames * FEATURE_DIM


@dataclass
class Estimate:
    """Peak bytes of each kind of process and of everything on one machine."""

    rollout: int
    learner: int
    evaluation: int
    total: int

    @classmethod
    def of(cls, cfg: Config) -> Estimate:
        c = cfg.cluster
        online = cfg.objective.name in ("sopo", "online_dpo")
        rollout = rollout_bytes(cfg) if online or cfg.objective.name == "offline_dpo" else 0
        learner, evaluation = learner_bytes(cfg), evaluation_bytes(cfg) if cfg.log.final_eval else 0
        training = (c.num_rollout_workers * (PROCESS_BYTES + rollout)
                    + c.num_learners * (PROCESS_BYTES + learner))
        total = RAY_BYTES + PROCESS_BYTES + dataset_bytes(cfg) + max(training, PROCESS_BYTES + evaluation)
        return cls(rollout, learner, evaluation, total)


def machine_memory() -> int:
    """This machine's memory in bytes: physical memory, or a smaller cgroup (container) limit."""
    total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    for limit in (Path("/sys/fs/cgroup/memory.max"), Path("/sys/fs/cgroup/memory/memory.limit_in_bytes")):
        try:
            value = limit.read_text().strip()
        except OSError:
            continue
        if value.isdigit():
            total = min(total, int(value))
    return total


def _refuse(what: str, need: int, have: int, where: str, fix: str) -> None:
    raise ConfigError(f"{what} needs about {_gib(need)} but {where} has {_gib(have)} of memory; {fix}")


def check_fits(cfg: Config, memory: int, where: str, *, whole_run: bool) -> Estimate:
    """Refuse a config whose estimated peak exceeds `memory` bytes (`where`: "this machine", "the largest node").

    `whole_run`: every process of the run shares this memory (a local Ray), so the total must fit as well as
    each process.
    """
    est = Estimate.of(cfg)
    s, o, frames = cfg.schedule, cfg.objective, cfg.data.max_frames
    if PROCESS_BYTES + est.rollout > memory:
        _refuse(f"one rollout batch (schedule.rollout_batch_size={s.rollout_batch_size} captions x objective.k={o.k}"
                f" samples of data.max_frames={frames} frames, model.latent_dim={cfg.model.latent_dim})",
                PROCESS_BYTES + est.rollout, memory, where,
                "lower objective.k or schedule.rollout_batch_size (or data.max_frames/model size)")
    if PROCESS_BYTES + est.learner > memory:
        _refuse(f"one learner step (schedule.batch_size={s.batch_size} pairs over {cfg.cluster.num_learners} learners, "
                f"data.max_frames={frames}, model.latent_dim={cfg.model.latent_dim} x {cfg.model.num_layers} layers)",
                PROCESS_BYTES + est.learner, memory, where,
                "lower schedule.batch_size or raise cluster.num_learners (or shrink data.max_frames/the model)")
    if PROCESS_BYTES + est.evaluation > memory:
        _refuse(f"the final evaluation (evaluator.generate_batch_size={cfg.evaluator.generate_batch_size} motions at "
                "once)", PROCESS_BYTES + est.evaluation, memory, where,
                "lower evaluator.generate_batch_size (or set log.final_eval=false)")
    if whole_run and est.total > memory:
        _refuse(f"the whole run ({cfg.cluster.num_rollout_workers} rollout workers of {_gib(est.rollout)} per batch, "
                f"{cfg.cluster.num_learners} learners of {_gib(est.learner)} per step, the dataset and Ray)", est.total,
                memory, where, "lower cluster.num_rollout_workers/num_learners, objective.k or the batch sizes, "
                "or run on a cluster (cluster.address)")
    return est


def check_generation_fits(cfg: Config, count: int, what: str) -> None:
    """Refuse generating `count` motions in one batch with `cfg`'s model when that cannot fit this machine."""
    need, have = PROCESS_BYTES + sampling_bytes(cfg, count), machine_memory()
    if need > have:
        _refuse(f"generating {count} motions at once ({what})", need, have, "this machine",
                "generate fewer at a time")
