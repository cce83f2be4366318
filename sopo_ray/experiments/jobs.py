"""Jobs of `sopo experiment`, each a Ray task on one CPU, so two run side by side on a laptop.

Alignment (`align_jobs`): one single-process run (`sopo_ray.local_loop.align_local`) per task.
Evaluation (`run_jobs`), on the job's held-out `split`:
- `full`: the paper's table for one generator (base `base.pt` or aligned `policy.pt`), `evaluator.replications`
  replications, mean and 95% CI (sopo_ray.evaluation.protocol.evaluate_generator);
- `real`: the same protocol on the split's own motions (the ceiling row);
- `curve`: a light check of an intermediate checkpoint (one replication of `experiment.curve_captions`
  captions, no MultiModality) for the oracle-accuracy-vs-steps plot;
- `samples`: motions for the filmstrip, the same captions, lengths and seeds for every model;
- `oracle_all`: the oracle on one generation for every motion of the split (`protocol.oracle_per_motion`), the
  "Oracle, all motions" column.

Every evaluation of one experiment uses the experiment's seed, so all models see the same captions, lengths and
initial noise.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from sopo_ray.config import Config, with_overrides


def _load_policy(cfg: Config, checkpoint: str, base: str | None, data_id: str) -> Any:
    """A generator from a generator checkpoint, or (with `base`) from the policy weights of a trainer checkpoint
    (a Ray learner's learner.pt or the local loop's checkpoint.pt)."""
    from sopo_ray.checkpoint import load_checkpoint
    from sopo_ray.models.generator import generator_from_payload, load_generator

    if base is None:
        return load_generator(checkpoint, data_id)[0]
    gen = generator_from_payload(load_checkpoint(base, ("mdm", "mld"), data_id), base)
    gen.load_state_dict(load_checkpoint(checkpoint, ("trainer", "local_trainer"), data_id)["state"]["policy"])
    return gen.eval()


def kept_checkpoints(run_dir: Path) -> list[tuple[int, Path]]:
    """(step, path) of a run's kept trainer checkpoints, oldest first: a Ray run's learner-*/step_*/learner.pt
    or the local loop's checkpoints/step_*.pt."""
    from sopo_ray.distributed.learner import LEARNER_FILE

    found = {int(p.parent.name.split("_")[1]): p for p in run_dir.glob(f"learner-*/step_*/{LEARNER_FILE}")}
    found |= {int(p.stem.split("_")[1]): p for p in run_dir.glob("checkpoints/step_*.pt")}
    return sorted(found.items())


def _align(cfg: Config, run_dir: str) -> tuple[int, float]:
    import time

    from rich.console import Console

    from sopo_ray.local_loop import align_local

    start = time.time()
    Path(run_dir).parent.mkdir(parents=True, exist_ok=True)
    with open(Path(run_dir).parent / f"{Path(run_dir).name}.log", "w") as log:
        status = align_local(cfg, Path(run_dir), console=Console(file=log, width=160))
    return status, time.time() - start


def align_jobs(runs: list[tuple[Config, Path]]) -> list[tuple[int, float]]:
    """(exit status, wall seconds) of each single-process alignment, run as Ray tasks of one CPU on this node."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    if not runs:
        return []
    here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=False)
    task = ray.remote(_align).options(num_cpus=1, scheduling_strategy=here, max_retries=0)
    return ray.get([task.remote(cfg, str(Path(d).resolve())) for cfg, d in runs])


def curve_config(cfg: Config) -> Config:
    """The evaluation config of one curve point: one replication of curve_captions captions, no MultiModality."""
    n = max(cfg.experiment.curve_captions, cfg.evaluator.r_precision_pool)
    return with_overrides(cfg, ["evaluator.replications=1", f"evaluator.num_captions={n}", "evaluator.mm_captions=0"])


def run_job(cfg: Config, job: dict[str, Any]) -> dict[str, Any]:
    """Run one evaluation job (see the module docstring); returns {metric: [mean, ci95]} or samples."""
    import torch

    from sopo_ray.data import load_dataset
    from sopo_ray.evaluation.evaluator import load_evaluator
    from sopo_ray.evaluation.protocol import evaluate_generator, evaluate_real, run_protocol
    from sopo_ray.reward import load_reward

    if cfg.torch_threads:
        torch.set_num_threads(cfg.torch_threads)
    data = load_dataset(cfg.data, job.get("split", "test"))
    if job["kind"] == "samples":
        gen = _load_policy(cfg, job["checkpoint"], job.get("base"), data.data_id)
        idx = np.asarray(job["indices"])
        with torch.no_grad():
            x = gen.generate(job["captions"], torch.as_tensor(data.lengths[idx]), job["seeds"],
                             cfg.diffusion.sample_steps, cfg.diffusion.guidance_scale)
        return {"features": x.cpu().numpy()}
    if job["kind"] == "oracle_all":
        from sopo_ray.evaluation.metrics import sample_mean_ci
        from sopo_ray.evaluation.protocol import oracle_per_motion

        scores = oracle_per_motion(_load_policy(cfg, job["checkpoint"], job.get("base"), data.data_id), data, cfg,
                                   cfg.seed)
        return {"Oracle-all": list(sample_mean_ci(scores))}
    evaluator = load_evaluator(job["evaluator"], data.data_id)
    reward = load_reward(job["reward"], data.data_id)
    if job["kind"] == "real":
        table = evaluate_real(evaluator, reward, data, cfg, cfg.seed)
    elif job["kind"] == "full":
        gen = _load_policy(cfg, job["checkpoint"], job.get("base"), data.data_id)
        table = evaluate_generator(gen, evaluator, reward, data, cfg, cfg.seed)
    else:
        from sopo_ray.evaluation.protocol import generator_source

        ccfg = curve_config(cfg)
        gen = _load_policy(ccfg, job["checkpoint"], job.get("base"), data.data_id)
        table = run_protocol(generator_source(gen, ccfg), evaluator, reward, data, ccfg, cfg.seed, False)[0]
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
