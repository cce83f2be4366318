"""The learner: Ray Train's `train_loop_per_worker`, one preference-optimisation step at a time.

Each rank holds the policy (trainable denoiser, DDP over gloo on CPU or NCCL on GPU) and a frozen copy of the base
model as reference (`algorithm.build_models`). One step, `Learner.train_step`, is a flat list of named, timed
stages:

    wait     take this rank's share of the batch (`sources`: replay queue / fixed pairs / captions); from the
             replay queue it was usually taken in the background during the previous step (`_prefetch`), so this
             is only what that left to wait
    collate  x^w from the dataset (or the best sample), x^l and r(x^l, c) from the groups
    forward  policy and reference denoising errors on x^w and x^l at one shared t and noise
    loss     objectives.objective_loss (SoPo Eq. 17, or a baseline)
    backward gradients (DDP all-reduces them), clipped
    update   skip the update if the loss or gradient is NaN/inf on any rank, else AdamW with warm-up + cosine
    publish  when the step starts a new policy version (`SchedulePlan.version_at`), rank 0 publishes the weights
    report   step record to the driver (RunControl); every checkpoint.interval steps a checkpoint via
             ray.train.report

Checkpoints (`resume.py`) hold the policy, optimizer, step, version, health counters, the reference's id and (rank
0) the replay queue's state with its groups, so a resumed run continues exactly where it stopped. A learner always
starts from the newest complete checkpoint in the run's storage: after a failure Ray Train restarts the worker
group (FailureConfig) and that is its registered checkpoint or a newer one it had not registered yet; a resumed
run (`--resume`) finds the previous session's last one. All randomness of step s on rank r comes from
`derive_seed(seed, "learner", s, r)`.
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ray
import ray.train
import ray.train.torch
import torch
import torch.distributed as dist

from sopo_ray.algorithm import build_models, preference_batch, timed, train_on_batch
from sopo_ray.checkpoint import save_checkpoint
from sopo_ray.config import Config, config_to_dict
from sopo_ray.distributed.group import caption_table
from sopo_ray.distributed.resume import LEARNER_FILE, PIPELINE_FILE, capture_pipeline, newest_loadable
from sopo_ray.distributed.schedule import SchedulePlan
from sopo_ray.distributed.seeds import derive_seed
from sopo_ray.distributed.sources import CaptionSource, FixedPairSource, QueueSource
from sopo_ray.distributed.storage import RunStorage
from sopo_ray.distributed.weights import call_with_timeout, state_to_numpy, trainable_keys
from sopo_ray.errors import ClusterError
from sopo_ray.models.text_encoder import load_text_cache
from sopo_ray.objectives import objective


@dataclass
class LearnerSetup:
    """What the driver hands every learner rank (as `train_loop_config={"setup": ...}`)."""

    cfg: Config
    base: Any
    """Object ref of the base model's checkpoint payload (policy and reference start from it)."""
    dataset: Any
    """Object ref of the train split."""
    store: Any
    """The WeightStore rank 0 publishes to."""
    control: Any
    """The RunControl: stop flag, status, step records, learner starts."""
    tau: float
    """The run's tau (objective.tau or its calibration)."""
    reference_id: str
    """Identity of the base model, stored in checkpoints (`artifacts.Artifacts.reference_id`)."""
    storage: str
    """Root of the run's checkpoints (the run directory or cluster.storage_path/<run>)."""
    queue: Any = None
    """The ReplayQueue (objectives with rollouts)."""
    pairs: Any = None
    """Object ref of the fixed pairs (offline_dpo)."""
    restarts_before: int = 0
    """Learner restarts of the run's earlier sessions."""


class Learner:
    """State and step of one learner rank; `train_loop_per_worker` builds one and calls `fit`."""

    def __init__(self, setup: LearnerSetup) -> None:
        cfg = self.cfg = setup.cfg
        self.setup = setup
        ctx = ray.train.get_context()
        self.rank, self.world = ctx.get_world_rank(), ctx.get_world_size()
        if cfg.torch_threads:
            torch.set_num_threads(cfg.torch_threads)
        if cfg.deterministic:
            torch.use_deterministic_algorithms(True)
        load_text_cache(cfg)
        self.device = ray.train.torch.get_device()
        self.dataset = ray.get(setup.dataset)
        self.plan = SchedulePlan.from_config(cfg, len(caption_table(self.dataset.motion_ids, self.dataset.captions)))
        self.models = build_models(cfg, ray.get(setup.base), self.device, wrap=lambda m: ray.train.torch.prepare_model(
            m, parallel_strategy_kwargs={"find_unused_parameters": True}))
        self.publish_keys = trainable_keys(self.models.policy) if cfg.schedule.publish_weights == "trainable" else None
        self.step = self.version = 0
        self.health = {"nonfinite_skipped": 0, "nonfinite_in_row": 0, "learner_restarts": 0}
        self.wait_s = self.busy_s = 0.0
        self.last_checkpoint_step = -1
        self.sync_error = ""
        self.source = self._make_source()
        self.prefetching = isinstance(self.source, QueueSource) and cfg.schedule.prefetch_batches
        restarts = call_with_timeout(setup.control.learner_started.remote(self.rank), cfg.faults.sync_timeout_s,
                                     "learner: registering with the run control")
        self._restore()
        # Ray Train restarted the worker group after a failure (FailureConfig): from the newest checkpoint, or from
        # the start when it died before the first one. Either way the weight store must go back to this version.
        self.restarted = restarts > 0
        self.health["learner_restarts"] = setup.restarts_before + restarts

    # ------------------------------------------------------------------------------------------------
    # The algorithm
    # ------------------------------------------------------------------------------------------------

    def train_step(self) -> dict[str, Any] | None:
        """One optimizer step (or a counted skip); None when the run was told to stop."""
        cfg, m, s = self.cfg, self.models, {}
        t0 = time.perf_counter()
        stop = self._agree(self._stop_requested())
        if stop and not self._holds_prefetch():   # before taking a batch, so no group is taken and not trained
            return None
        got = self.source.next(self.step, self.version)
        if self._agree(got is None):
            return None
        t = timed(s, "wait", t0)
        if not stop:
            self._prefetch()
        batch = preference_batch(cfg.objective.name, got.items, self.dataset.features, self.dataset.lengths,
                                 got.staleness)
        timed(s, "collate", t)
        gen = torch.Generator().manual_seed(derive_seed(cfg.seed, "learner", self.step, self.rank))
        finite, metrics = train_on_batch(cfg, self.step, m.model, m.policy, m.reference, m.optimizer, m.params,
                                         batch, gen, self.device, self.setup.tau, s, self._agree)
        if finite:
            self.step += 1
            self.health["nonfinite_in_row"] = 0
        else:
            self.health["nonfinite_skipped"] += 1
            self.health["nonfinite_in_row"] += 1
        t = time.perf_counter()
        if self.plan.version_at(self.step) != self.version:
            self.version = self.plan.version_at(self.step)
            try:
                self._publish()
            except ClusterError as exc:
                self.sync_error = str(exc)
        timed(s, "publish", t)
        self.wait_s += s["wait"]
        self.busy_s += sum(v for k, v in s.items() if k != "wait")
        return {"step": self.step, "version": self.version, "skipped": not finite, **metrics,
                **batch.group_metrics, "health/staleness": list(batch.staleness),
                "health/learner_idle_frac": s["wait"] / max(sum(s.values()), 1e-9),
                "health/learner_idle_frac_total": self.wait_s / max(self.wait_s + self.busy_s, 1e-9),
                **{f"health/{k}": v for k, v in self.health.items()},
                **{f"queue/dropped_while_waiting_{k}": v for k, v in got.dropped.items()},
                **{f"timing/{k}_s": v for k, v in s.items()}}

    # ------------------------------------------------------------------------------------------------
    # Loop, stop, publish
    # ------------------------------------------------------------------------------------------------

    def fit(self) -> None:
        """Train until total_steps, a stop request, or too many non-finite steps in a row."""
        cfg, control = self.cfg, self.setup.control
        if self.restarted:
            self._publish()
        state, message = "done", f"finished {cfg.schedule.total_steps} steps"
        while self.step < cfg.schedule.total_steps:
            record = self.train_step()
            if record is None:
                state, message = "stopped", f"stopped at step {self.step} on request"
                break
            if self.rank == 0:
                control.report.remote([record])
            if self._agree(bool(self.sync_error)):
                state, message = "failed", f"{self.sync_error or 'rank 0 could not publish weights'}; stopped at " \
                    f"step {self.step} with a checkpoint"
                break
            if self.health["nonfinite_in_row"] >= (limit := cfg.faults.max_nonfinite_in_row):
                state = "failed"
                message = (f"loss or gradient was NaN/inf in {limit} steps in a row (at step {self.step}); lower "
                           "optimizer.lr, check the reward model and data, or raise faults.max_nonfinite_in_row")
                break
            if not record["skipped"] and self.step % cfg.checkpoint.interval == 0:
                self.checkpoint(record)
        if self.prefetching:
            self.source.close()
        self.checkpoint({"step": self.step, "version": self.version})
        if self.rank == 0:
            ray.get(control.set_status.remote(state, message, step=self.step, version=self.version))

    def _prefetch(self) -> None:
        """Start taking the next step's groups while this step computes (schedule.prefetch_batches), when nothing
        can come between taking and training them: the next step is in this sync window (so the queue filters them
        for the version that trains them and never hears of a version before it is published), it is not a
        checkpoint step (a checkpoint's queue snapshot must hold no group taken and not trained), not past the end,
        and a non-finite result of this step cannot end the run."""
        nxt, cfg = self.step + 1, self.cfg
        if (self.prefetching and nxt < cfg.schedule.total_steps and self.plan.version_at(nxt) == self.version
                and nxt % cfg.checkpoint.interval != 0
                and self.health["nonfinite_in_row"] + 1 < cfg.faults.max_nonfinite_in_row):
            self.source.prefetch(nxt, self.version)

    def _holds_prefetch(self) -> bool:
        """A prefetched batch was taken from the queue (the same on every rank: the rule depends on the step only);
        a stop trains it first, so no group is taken and not trained."""
        return self.prefetching and self.source.holds()

    def _agree(self, flag: bool) -> bool:
        """True on every rank if `flag` is true on any rank (ranks must take the same branch)."""
        if self.world == 1 or not dist.is_initialized():
            return bool(flag)
        value = torch.tensor([1.0 if flag else 0.0])
        dist.all_reduce(value, op=dist.ReduceOp.MAX)
        return bool(value.item() > 0)

    def _stop_requested(self) -> bool:
        status = call_with_timeout(self.setup.control.status.remote(), self.cfg.faults.sync_timeout_s,
                                   "learner: reading the run status")
        return status["state"] == "stop_requested"

    def _publish(self) -> None:
        """Rank 0 publishes the policy as `self.version` (its trainable parameters, or all: schedule.publish_weights);
        a publish that does not answer in time ends the run."""
        if self.rank != 0:
            return
        state = state_to_numpy(self.models.policy, self.publish_keys)
        call_with_timeout(self.setup.store.publish.remote(self.version, self.step, state),
                          self.cfg.faults.sync_timeout_s, f"learner: publishing weights v{self.version}")

    def _make_source(self) -> Any:
        cfg, source = self.cfg, objective(self.cfg.objective.name).source
        if source == "captions":
            table = caption_table(self.dataset.motion_ids, self.dataset.captions)
            return CaptionSource(table, cfg.seed, cfg.schedule.batch_size, self.rank, self.world)
        if source == "fixed_pairs":
            return FixedPairSource(ray.get(self.setup.pairs), cfg.seed, cfg.schedule.batch_size, self.rank, self.world)
        return QueueSource(self.setup.queue, cfg.schedule.batch_size, self.world)

    # ------------------------------------------------------------------------------------------------
    # Checkpoints
    # ------------------------------------------------------------------------------------------------

    def checkpoint(self, metrics: dict[str, Any]) -> None:
        """Report a checkpoint of this step (all ranks call; rank 0 writes the files)."""
        if self.step == self.last_checkpoint_step:
            return
        self.last_checkpoint_step = self.step
        scalars = {k: v for k, v in metrics.items() if isinstance(v, int | float) and not isinstance(v, bool)}
        if self.rank != 0:
            ray.train.report(scalars)
            return
        cfg, setup, m = self.cfg, self.setup, self.models
        with tempfile.TemporaryDirectory() as tmp:
            config, data_id = config_to_dict(cfg), self.dataset.data_id
            policy = {k: v.detach().cpu() for k, v in m.policy.state_dict().items()}
            save_checkpoint(Path(tmp) / LEARNER_FILE, "trainer", {"policy": policy,
                            "optimizer": m.optimizer.state_dict()}, config, data_id, step=self.step,
                            version=self.version, health=dict(self.health), reference=setup.reference_id,
                            tau=setup.tau, kind_of_model=m.policy.kind)
            if setup.queue is not None:
                pipeline = capture_pipeline(setup.queue, setup.store, self.plan, self.step,
                                            keep_groups=cfg.checkpoint.keep_queue_on_resume,
                                            timeout_s=cfg.faults.sync_timeout_s)
                save_checkpoint(Path(tmp) / PIPELINE_FILE, "pipeline", pipeline.to_state(), config, data_id,
                                step=self.step)
            ray.train.report(scalars, checkpoint=ray.train.Checkpoint.from_directory(tmp),
                             checkpoint_dir_name=f"step_{self.step:08d}")

    def _restore(self) -> None:
        """Continue from the newest complete checkpoint in the run's storage, if there is one: Ray Train's registered
        checkpoint (after a restart in this session), a newer one Ray Train had written but not yet registered when
        a worker died, or the newest checkpoint of an earlier session when the run is resumed. One cut off by the
        crash is skipped for the one before it."""
        payload = newest_loadable(RunStorage(self.setup.storage), self.dataset.data_id).learner
        if payload is None:
            return
        self.models.policy.load_state_dict(payload["state"]["policy"])
        self.models.optimizer.load_state_dict(payload["state"]["optimizer"])
        self.step, self.version = int(payload["step"]), int(payload["version"])
        self.health.update(payload["health"])
        self.last_checkpoint_step = self.step


def train_loop_per_worker(config: dict[str, Any]) -> None:
    """Ray Train entry point (`TorchTrainer(train_loop_per_worker, train_loop_config={"setup": setup}, ...)`)."""
    Learner(config["setup"]).fit()
