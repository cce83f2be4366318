"""Training cost of `sopo experiment`, in wall time and in network passes, so methods compare at equal compute.

Unit: one **sample-pass** is one motion through the denoiser (or, for MLD pretraining, the VAE) once; a training
step counts forward + backward as 3 sample-passes, a no-grad forward (reference model, DDIM step) as 1, and a
classifier-free-guided DDIM step as 2 (conditional and unconditional in one batch). Reward-model scoring and the
MLD decoder during rollouts are small next to sampling and are not counted.

    pretraining   3 * batch * (steps + vae_steps for MLD)
    learner       per step and caption: SFT 3 (policy on x^w); DPO-style 2 * 3 (policy on x^w, x^l) + 2 (reference)
    rollout       per generated group: K samples * rollout DDIM steps * (2 with guidance)
    offline pairs offline_dpo only: the same per pair, sampled once from the reference before training
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from sopo_ray.config import Config
from sopo_ray.tracking import read_metrics

TRAIN_STEP = 3


def _sampling_passes(cfg: Config, groups: int) -> int:
    guided = 1 if cfg.diffusion.guidance_scale == 1.0 else 2
    return groups * cfg.objective.k * cfg.diffusion.rollout_sample_steps * guided


def pretrain_cost(cfg: Config, base_path: Path, base_payload: dict[str, Any] | None = None) -> dict[str, Any]:
    """Sample-passes and wall seconds of the base model's pretraining.

    Steps and batch size are the base checkpoint's own (`base_payload`: its `pretrain_steps` and config, written
    by `sopo pretrain`), so a base trained with other settings than `cfg` is costed as it was trained; a
    checkpoint without them (imported weights) falls back to `cfg.pretrain`. The wall time is the one measured
    when `sopo experiment` built the base (build_time.json); for a base built elsewhere it is estimated from its
    metrics.jsonl (mean step time x steps) and marked `estimated`.
    """
    p = cfg.pretrain
    steps = p.steps + (p.vae_steps if cfg.model.kind == "mld" else 0)
    batch = p.batch_size
    if base_payload is not None and "pretrain_steps" in base_payload:
        steps = int(base_payload["pretrain_steps"])
        batch = int(base_payload["config"].get("pretrain", {}).get("batch_size", batch))
    cost: dict[str, Any] = {"steps": steps, "sample_passes": TRAIN_STEP * batch * steps, "wall_s": None,
                            "estimated": False}
    timing = base_path.parent / "build_time.json"
    metrics = base_path.parent / "metrics.jsonl"
    if timing.is_file():
        cost["wall_s"] = float(json.loads(timing.read_text())["wall_s"])
    elif metrics.is_file():
        times = [r["timing/step_s"] for r in read_metrics(metrics) if "timing/step_s" in r]
        if times:
            cost["wall_s"], cost["estimated"] = sum(times) / len(times) * steps, True
    return cost


def alignment_cost(cfg: Config, records: list[dict[str, Any]], offline_pairs: int) -> dict[str, Any]:
    """Sample-passes of one aligned run (its metrics.jsonl `records`; `offline_pairs` pairs sampled before
    training), split into learner, rollout and offline-pair sampling."""
    s, name = cfg.schedule, cfg.objective.name
    per_caption = TRAIN_STEP if name == "sft" else 2 * TRAIN_STEP + 2
    learner = s.total_steps * s.batch_size * per_caption
    generated = [r["queue/generated"] for r in records if r.get("event") == "pipeline" and "queue/generated" in r]
    if generated:
        groups = int(generated[-1])
    else:   # the local loop samples exactly the groups it trains (no queue, nothing dropped)
        groups = sum(len(r.get("health/staleness") or []) for r in records if r.get("event") == "step")
    rollout = _sampling_passes(cfg, groups)
    offline = _sampling_passes(cfg, offline_pairs)
    return {"learner_passes": learner, "rollout_passes": rollout, "offline_pair_passes": offline,
            "rollout_groups": groups, "sample_passes": learner + rollout + offline}
