"""`sopo align --local`: the whole semi-online schedule in one process, without Ray.

The same round as the distributed trainer (`sopo_ray.algorithm`), step by step:

    for each learner step s:
        version v(s) = s // sync_interval is what the learner trains; the groups of step s are sampled by the
        policy of version max(0, v(s) - max_staleness), the oldest the schedule allows (as a deterministic Ray
        run does), from the captions at stream positions [s * B, (s + 1) * B)
        SoPo / online DPO: sample K, score, pick  ->  preference_batch  ->  train_on_batch
        SFT: the dataset motions of those captions; offline DPO: pairs sampled once from the reference
        every sync_interval applied steps the policy becomes version v + 1

It is what the hyperparameter sweeps and `sopo experiment` run (two runs fit on two cores), and a test checks
that it trains the same pairs to the same weights as a deterministic one-worker Ray run. A run directory holds
config.yaml, metrics.jsonl (the Ray trainer's record keys), checkpoint.pt (atomic, `--resume` continues), the
newest `checkpoint.keep` checkpoints/step_*.pt, policy.pt and the final report.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch
import yaml
from rich.console import Console

from sopo_ray import artifacts, memory, trackers
from sopo_ray.algorithm import build_models, calibrate_tau, preference_batch, sample_groups, timed, train_on_batch
from sopo_ray.checkpoint import load_checkpoint, save_checkpoint
from sopo_ray.config import Config, config_to_dict, with_absolute_paths
from sopo_ray.console import make_console
from sopo_ray.distributed.group import caption_table
from sopo_ray.distributed.schedule import SchedulePlan
from sopo_ray.distributed.seeds import derive_seed
from sopo_ray.distributed.sources import CaptionSource, FixedPairSource
from sopo_ray.distributed.summary import eval_record, print_summary
from sopo_ray.errors import CheckpointError, ConfigError
from sopo_ray.models.generator import generator_from_payload, save_generator
from sopo_ray.models.text_encoder import load_text_cache
from sopo_ray.objectives import objective
from sopo_ray.reward.oracle import rollout_reward
from sopo_ray.tracking import MetricsWriter

CHECKPOINT = "checkpoint.pt"
LOG_EVERY = 10


def _state(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


class LocalTrainer:
    """Policy, frozen reference, the rollout copy at its version, reward, optimizer and schedule of one run."""

    def __init__(self, cfg: Config, art: artifacts.Artifacts) -> None:
        self.cfg, self.art = cfg, art
        self.train = art.train
        self.models = build_models(cfg, art.base_payload)
        self.policy, self.reference = self.models.policy, self.models.reference
        self.rollout = generator_from_payload(art.base_payload).eval().requires_grad_(False)
        self.reward = rollout_reward(cfg.reward.kind, art.reward_payload, self.train).eval()
        self.table = caption_table(self.train.motion_ids, self.train.captions)
        self.plan = SchedulePlan.from_config(cfg, len(self.table))
        self.tau = calibrate_tau(cfg, self.reference, self.reward, self.train)
        self.step = self.version = self.rollout_version = 0
        self.versions: dict[int, dict[str, torch.Tensor]] = {0: _state(self.policy)}
        self.health = {"nonfinite_skipped": 0, "nonfinite_in_row": 0}
        self.pairs = None

    # ------------------------------------------------------------------------------------------------
    # Where step s's pairs come from
    # ------------------------------------------------------------------------------------------------

    def _groups(self, step: int, version: int, keep_best: bool) -> list[Any]:
        cfg, b = self.cfg, self.plan.batch_size
        if version != self.rollout_version:
            self.rollout.load_state_dict(self.versions[version])
            self.rollout_version = version
        refs = [self.table[i] for i in self.plan.captions(step * b, b)]
        return sample_groups(self.rollout, self.reward, self.train.features, self.train.lengths, refs,
                             version=version, k=cfg.objective.k, steps=cfg.diffusion.rollout_sample_steps,
                             guidance=cfg.diffusion.guidance_scale, eta=cfg.diffusion.rollout_ddim_eta,
                             run_seed=cfg.seed, keep_best=keep_best,
                             positions=list(range(step * b, (step + 1) * b)), params=self.train.params)

    def items(self, step: int) -> tuple[list[Any], list[int]]:
        """(groups or caption refs, staleness per item) of learner step `step`."""
        spec, b = objective(self.cfg.objective.name), self.plan.batch_size
        if spec.source == "captions":
            return CaptionSource(self.table, self.cfg.seed, b, 0, 1).next(step, self.version).items, []
        if spec.source == "fixed_pairs":
            if self.pairs is None:   # sampled ONCE from the reference (version 0), never refreshed
                n = min(self.cfg.objective.offline_pairs, len(self.table))
                self.pairs = [g for s in range(0, n, b) for g in self._pair_batch(s, min(b, n - s))]
            return FixedPairSource(self.pairs, self.cfg.seed, b, 0, 1).next(step, self.version).items, []
        version = self.plan.required_version(step)
        return self._groups(step, version, keep_best=spec.keeps_best), [self.version - version] * b

    def _pair_batch(self, start: int, size: int) -> list[Any]:
        if self.rollout_version != 0:
            self.rollout.load_state_dict(self.versions[0])
            self.rollout_version = 0
        refs = [self.table[i] for i in self.plan.captions(start, size)]
        return sample_groups(self.rollout, self.reward, self.train.features, self.train.lengths, refs, version=0,
                             k=self.cfg.objective.k, steps=self.cfg.diffusion.rollout_sample_steps,
                             guidance=self.cfg.diffusion.guidance_scale, eta=self.cfg.diffusion.rollout_ddim_eta,
                             run_seed=self.cfg.seed, keep_best=True,
                             positions=list(range(start, start + size)), params=self.train.params)

    # ------------------------------------------------------------------------------------------------
    # One learner step
    # ------------------------------------------------------------------------------------------------

    def train_step(self) -> dict[str, Any]:
        """Sample (or look up) step `self.step`'s pairs and train on them; the step's metrics record."""
        cfg, s = self.cfg, {}
        t0 = time.perf_counter()
        items, staleness = self.items(self.step)
        t = timed(s, "rollout", t0)
        batch = preference_batch(cfg.objective.name, items, self.train.features, self.train.lengths, staleness)
        timed(s, "collate", t)
        gen = torch.Generator().manual_seed(derive_seed(cfg.seed, "learner", self.step, 0))
        m = self.models
        applied, metrics = train_on_batch(cfg, self.step, m.model, m.policy, m.reference, m.optimizer, m.params,
                                          batch, gen, "cpu", self.tau, s)
        if applied:
            self.step += 1
            self.health["nonfinite_in_row"] = 0
            if self.plan.version_at(self.step) != self.version:
                self.version = self.plan.version_at(self.step)
                self.versions[self.version] = _state(self.policy)
                oldest = self.plan.required_version(self.step)   # what later steps may still sample with
                self.versions = {v: w for v, w in self.versions.items() if v >= oldest}
        else:
            self.health["nonfinite_skipped"] += 1
            self.health["nonfinite_in_row"] += 1
        return {"step": self.step, "version": self.version, "skipped": not applied, **metrics,
                **batch.group_metrics, "health/staleness": list(batch.staleness),
                **{f"health/{k}": v for k, v in self.health.items()}, **{f"timing/{k}_s": v for k, v in s.items()}}

    # ------------------------------------------------------------------------------------------------
    # Checkpoints
    # ------------------------------------------------------------------------------------------------

    def save(self, path: Path) -> None:
        """Atomically write everything a resumed run needs: weights, optimizer, counters, rollout versions."""
        state = {"policy": _state(self.policy), "optimizer": self.models.optimizer.state_dict(),
                 "versions": self.versions, "pairs": None if self.pairs is None else [g.to_state() for g in self.pairs]}
        save_checkpoint(path, "local_trainer", state, config_to_dict(self.cfg), self.train.data_id, step=self.step,
                        version=self.version, health=dict(self.health), tau=self.tau,
                        reference=self.art.reference_id)

    def restore(self, path: Path) -> None:
        from sopo_ray.distributed.group import RolloutGroup

        payload = load_checkpoint(path, "local_trainer", self.train.data_id)
        if not artifacts.same_reference(payload.get("reference"), self.art.reference_id):
            raise CheckpointError(f"{path} was aligned from reference {payload.get('reference')} but the base model "
                                  f"is now {self.art.reference_id}; restore that base or start a new run")
        state = payload["state"]
        self.policy.load_state_dict(state["policy"])
        self.models.optimizer.load_state_dict(state["optimizer"])
        self.versions = {int(v): w for v, w in state["versions"].items()}
        self.pairs = None if state["pairs"] is None else [RolloutGroup.from_state(g) for g in state["pairs"]]
        self.step, self.version = int(payload["step"]), int(payload["version"])
        self.health.update(payload["health"])
        self.tau = float(payload["tau"])
        self.rollout_version = -1


def align_local(cfg: Config, run_dir: Path, *, resume: bool = False, console: Console | None = None) -> int:
    """Run (or resume) one alignment in this process; 0 when finished, 130 when interrupted (checkpoint kept)."""
    console = console or make_console()
    started = time.time()
    cfg = with_absolute_paths(cfg)
    run_dir = Path(run_dir)
    ckpt = run_dir / CHECKPOINT
    # Everything that can refuse the run comes before building anything.
    if not resume and ckpt.is_file():
        raise ConfigError(f"{run_dir} already holds a run; continue it with `sopo align --local --resume {run_dir}` "
                          "or choose another --output-dir")
    if resume and not ckpt.is_file():
        raise ConfigError(f"--resume {run_dir}: no {CHECKPOINT} there (a local run writes it every "
                          "checkpoint.interval steps); start a new run instead")
    trackers.check_available(cfg.log)
    memory.check_fits(cfg, memory.machine_memory(), "this machine", whole_run=False)
    art = artifacts.resolve(cfg, console, need_evaluator=cfg.log.final_eval)
    if cfg.torch_threads:
        torch.set_num_threads(cfg.torch_threads)
    if cfg.deterministic:
        torch.use_deterministic_algorithms(True)
    load_text_cache(cfg)
    trainer = LocalTrainer(cfg, art)
    if resume:
        trainer.restore(ckpt)
        console.print(f"resuming from {ckpt} (step {trainer.step}, version {trainer.version})")
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.yaml").write_text(yaml.safe_dump(config_to_dict(cfg), sort_keys=False))
    s = cfg.schedule
    console.print(f"local run ({cfg.objective.name}, tau {trainer.tau:.4f}): {run_dir}")
    tracked = trackers.open_trackers(cfg, run_dir, resume=resume, start_step=trainer.step)
    with MetricsWriter(run_dir / "metrics.jsonl", tracked) as log:
        try:
            while trainer.step < s.total_steps:
                record = trainer.train_step()
                log.log(record["step"], event="step", **{k: v for k, v in record.items() if k != "step"})
                if trainer.health["nonfinite_in_row"] >= (limit := cfg.faults.max_nonfinite_in_row):
                    trainer.save(ckpt)
                    console.print(f"[red]error:[/] loss or gradient was NaN/inf in {limit} steps in "
                                  "a row; lower optimizer.lr or check the reward model and data")
                    return 1
                if not record["skipped"] and trainer.step % cfg.checkpoint.interval == 0:
                    trainer.save(ckpt)
                    keep_snapshot(trainer, run_dir, cfg.checkpoint.keep)
                if not record["skipped"] and trainer.step % LOG_EVERY == 0:
                    console.print(_progress_line(record, s.total_steps, time.time() - started), highlight=False)
        except KeyboardInterrupt:
            trainer.save(ckpt)
            console.print(f"stopped at step {trainer.step}; checkpoint written. Continue with:\n"
                          f"  sopo align --local --resume {run_dir}")
            return 130
        trainer.save(ckpt)
        log.log(trainer.step, event="run", state="done", seconds=round(time.time() - started, 1))
        policy = save_generator(run_dir / "policy.pt", trainer.policy, cfg, art.train.data_id,
                                aligned_from=art.reference_id, objective=cfg.objective.name, step=trainer.step,
                                version=trainer.version)
        report = None
        if cfg.log.final_eval:
            from sopo_ray.distributed.dashboard import plot_dashboard
            from sopo_ray.evaluation.report import evaluate_and_report

            report = evaluate_and_report(cfg, art, policy, run_dir, console)
            plot_dashboard(run_dir / "metrics.jsonl", run_dir / "dashboard.png")
            log.log(trainer.step, event="eval", **eval_record(report))
    print_summary(console, run_dir, objective=cfg.objective.name, steps=trainer.step, elapsed_s=time.time() - started,
                  policy=policy, report=report, trackers=tracked, ray_log=None)
    return 0


def keep_snapshot(trainer: LocalTrainer, run_dir: Path, keep: int) -> None:
    """A copy of this step's checkpoint as checkpoints/step_<step>.pt, keeping the newest `keep` of them (as a Ray
    run keeps `checkpoint.keep` learner checkpoints): what `sopo experiment` evaluates along the run."""
    folder = run_dir / "checkpoints"
    trainer.save(folder / f"step_{trainer.step:08d}.pt")
    for old in sorted(folder.glob("step_*.pt"))[:-keep]:
        old.unlink()


def _progress_line(record: dict[str, Any], total: int, seconds: float) -> str:
    def f(key: str) -> str:
        value = record.get(key)
        return "-" if value is None else f"{value:.3f}"

    return (f"step {record['step']}/{total} ({seconds:.0f} s)  loss {f('loss/loss')}  logit {f('loss/logit_mean')}  "
            f"gate {f('loss/frac_below_tau')}  r(x^l) {f('reward/x_l')}  oracle {f('oracle/mean')}  "
            f"agree {f('oracle/agreement')}")
