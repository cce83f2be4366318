"""Evaluation jobs of `sopo experiment`: each one a Ray task on one CPU, so two run side by side on a laptop.

- `full`: the paper's table for one generator (base `base.pt` or aligned `policy.pt`) on the held-out split,
  `evaluator.replications` replications, mean and 95% CI (sopo_ray.evaluation.protocol.evaluate_generator);
- `real`: the same protocol on the split's own motions (the ceiling row);
- `curve`: a light check of an intermediate learner checkpoint (one replication of `experiment.curve_captions`
  captions, no MultiModality) for the oracle-accuracy-vs-steps plot;
- `samples`: motions for the filmstrip, the same captions, lengths and seeds for every model.

Every job of one experiment uses the run seed, so all models see the same captions, lengths and initial noise.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from sopo_ray.config import Config, with_overrides


def _load_policy(cfg: Config, checkpoint: str, base: str | None, data_id: str) -> Any:
    """A generator from a generator checkpoint, or (with `base`) from a learner checkpoint's policy weights."""
    from sopo_ray.checkpoint import load_checkpoint
    from sopo_ray.models.generator import generator_from_payload, load_generator

    if base is None:
        return load_generator(checkpoint, data_id)[0]
    gen = generator_from_payload(load_checkpoint(base, ("mdm", "mld"), data_id), base)
    gen.load_state_dict(load_checkpoint(checkpoint, "trainer", data_id)["state"]["policy"])
    return gen.eval()


def curve_config(cfg: Config) -> Config:
    """The evaluation config of one curve point: one replication of curve_captions captions, no MultiModality."""
    n = max(cfg.experiment.curve_captions, cfg.evaluator.r_precision_pool)
    return with_overrides(cfg, ["evaluator.replications=1", f"evaluator.num_captions={n}", "evaluator.mm_captions=0"])


def run_job(cfg: Config, job: dict[str, Any]) -> dict[str, Any]:
    """Run one evaluation job (see the module docstring); returns {metric: [mean, ci95]} or samples."""
    import torch

    from sopo_ray.data.store import load_dataset
    from sopo_ray.evaluation.evaluator import load_evaluator
    from sopo_ray.evaluation.protocol import evaluate_generator, evaluate_real, run_protocol
    from sopo_ray.reward.tmr import load_reward

    if cfg.torch_threads:
        torch.set_num_threads(cfg.torch_threads)
    test = load_dataset(cfg.data, "test")
    if job["kind"] == "samples":
        gen = _load_policy(cfg, job["checkpoint"], job.get("base"), test.data_id)
        idx = np.asarray(job["indices"])
        with torch.no_grad():
            x = gen.generate(job["captions"], torch.as_tensor(test.lengths[idx]), job["seeds"],
                             cfg.diffusion.sample_steps, cfg.diffusion.guidance_scale)
        return {"features": x.cpu().numpy()}
    evaluator = load_evaluator(job["evaluator"], test.data_id)
    reward = load_reward(job["reward"], test.data_id)
    if job["kind"] == "real":
        table = evaluate_real(evaluator, reward, test, cfg, cfg.seed)
    elif job["kind"] == "full":
        gen = _load_policy(cfg, job["checkpoint"], job.get("base"), test.data_id)
        table = evaluate_generator(gen, evaluator, reward, test, cfg, cfg.seed)
    else:
        from sopo_ray.evaluation.protocol import generator_source

        ccfg = curve_config(cfg)
        gen = _load_policy(ccfg, job["checkpoint"], job.get("base"), test.data_id)
        table = run_protocol(generator_source(gen, ccfg), evaluator, reward, test, ccfg, cfg.seed, False)[0]
    return {k: [float(v[0]), float(v[1])] for k, v in table.items()}


def run_jobs(cfg: Config, jobs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Run evaluation jobs as Ray tasks (one CPU each) on the driver's node; results in the order of `jobs`."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    if not jobs:
        return []
    here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=False)
    task = ray.remote(run_job).options(num_cpus=1, scheduling_strategy=here, max_retries=0)
    return ray.get([task.remote(cfg, job) for job in jobs])


def model_paths(cfg: Config) -> dict[str, str]:
    """Absolute paths of the evaluator and the reward model of `cfg` (the ones every job loads)."""
    from sopo_ray import artifacts

    return {"evaluator": str(Path(artifacts.evaluator_path(cfg)).resolve()),
            "reward": str(Path(artifacts.reward_path(cfg)).resolve())}
