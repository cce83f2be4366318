"""The learner: Ray Train's `train_loop_per_worker`, one preference-optimisation step at a time.

Each rank holds the policy (trainable denoiser, DDP over gloo on CPU or NCCL on GPU) and a frozen copy of the base
model as reference. One step, `Learner.train_step`, is a flat list of named, timed stages:

    wait     take this rank's share of the batch (replay queue / fixed pairs / captions)
    collate  x^w from the dataset (or the best sample), x^l and r(x^l, c) from the groups
    forward  policy and reference denoising errors on x^w and x^l at one shared t and noise
    loss     objectives.objective_loss (SoPo Eq. 17, or a baseline)
    backward gradients (DDP all-reduces them), clipped
    update   skip the update if the loss or gradient is NaN/inf on any rank, else AdamW with warm-up + cosine
    publish  every sync_interval steps rank 0 publishes the weights as version + 1 to the WeightStore
    report   step record to the driver; every checkpoint_interval steps a checkpoint via ray.train.report

Checkpoints hold the policy, optimizer, step, version, health counters, the reference's id and (rank 0) the
replay queue's snapshot with its groups, so a resumed run continues exactly where it stopped. A learner always
starts from the newest complete checkpoint in the run's storage: after a failure Ray Train restarts the worker
group (FailureConfig) and that is its registered checkpoint (`ray.train.get_checkpoint()`) or a newer one it had
not registered yet; a resumed run (`--resume`) finds the previous session's last one.
All randomness of step s on rank r comes from `derive_seed(seed, "learner", s, r)`.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import ray
import ray.train
import ray.train.torch
import torch
import torch.distributed as dist

from sopo_ray.algorithm import PolicyErrors, preference_batch, timed, train_on_batch, trainable
from sopo_ray.checkpoint import load_checkpoint, save_checkpoint
from sopo_ray.config import Config, config_to_dict
from sopo_ray.distributed.group import caption_table
from sopo_ray.distributed.seeds import derive_seed
from sopo_ray.distributed.sources import CaptionSource, FixedPairSource, QueueSource
from sopo_ray.distributed.storage import RunStorage, local_copy
from sopo_ray.distributed.weights import call_with_timeout, fetch_weights, state_to_numpy
from sopo_ray.errors import CheckpointError, ClusterError
from sopo_ray.models.text_encoder import load_text_cache

LEARNER_FILE = "learner.pt"
PIPELINE_FILE = "pipeline.pt"


class Learner:
    """State and step of one learner rank; `train_loop_per_worker` builds one and calls `fit`."""

    def __init__(self, setup: dict[str, Any]) -> None:
        from sopo_ray.models.generator import generator_from_payload

        self.cfg: Config = setup["cfg"]
        self.setup = setup
        ctx = ray.train.get_context()
        self.rank, self.world = ctx.get_world_rank(), ctx.get_world_size()
        if self.cfg.torch_threads:
            torch.set_num_threads(self.cfg.torch_threads)
        if self.cfg.deterministic:
            torch.use_deterministic_algorithms(True)
        load_text_cache(self.cfg)
        self.device = ray.train.torch.get_device()
        base = ray.get(setup["base"])
        self.dataset = ray.get(setup["dataset"])
        self.policy = generator_from_payload(base).to(self.device).eval()
        self.reference = generator_from_payload(base).to(self.device).eval().requires_grad_(False)
        self.params = trainable(self.policy)
        self.model = ray.train.torch.prepare_model(PolicyErrors(self.policy),
                                                   parallel_strategy_kwargs={"find_unused_parameters": True})
        self.optimizer = torch.optim.AdamW(self.params, lr=self.cfg.optimizer.lr,
                                           weight_decay=self.cfg.optimizer.weight_decay)
        self.store, self.queue = setup["store"], setup["queue"]
        self.step = self.version = 0
        self.health = {"nonfinite_skipped": 0, "nonfinite_in_row": 0, "learner_restarts": 0}
        self.wait_s = self.busy_s = 0.0
        self.last_checkpoint_step = -1
        self.sync_error = ""
        self.source = self._make_source()
        restarts = call_with_timeout(self.store.learner_started.remote(self.rank), self.cfg.faults.sync_timeout_s,
                                     "learner: registering with the weight store")
        self._restore()
        # Ray Train restarted the worker group after a failure (FailureConfig): from the newest checkpoint, or from
        # the start when it died before the first one. Either way the weight store must go back to this version.
        self.restarted = restarts > 0
        self.health["learner_restarts"] = setup.get("restarts_before", 0) + restarts

    # ------------------------------------------------------------------------------------------------
    # The algorithm
    # ------------------------------------------------------------------------------------------------

    def train_step(self) -> dict[str, Any] | None:
        """One optimizer step (or a counted skip); None when the run was told to stop."""
        cfg, s = self.cfg, {}
        t0 = time.perf_counter()
        if self._agree(self._stop_requested()):   # before taking a batch, so no group is taken and not trained
            return None
        got = self.source.next(self.step, self.version)
        if self._agree(got is None):
            return None
        items, staleness, dropped = got
        t = timed(s, "wait", t0)
        batch = preference_batch(cfg.objective.name, items, self.dataset.features, self.dataset.lengths, staleness)
        timed(s, "collate", t)
        gen = torch.Generator().manual_seed(derive_seed(cfg.seed, "learner", self.step, self.rank))
        finite, metrics = train_on_batch(cfg, self.step, self.model, self.policy, self.reference, self.optimizer,
                                         self.params, batch, gen, self.device, self.setup["tau"], s, self._agree)
        if finite:
            self.step += 1
            self.health["nonfinite_in_row"] = 0
        else:
            self.health["nonfinite_skipped"] += 1
            self.health["nonfinite_in_row"] += 1
        t = time.perf_counter()
        if finite and self.step % cfg.schedule.sync_interval == 0:
            self.version += 1
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
                **{f"queue/dropped_while_waiting_{k}": v for k, v in dropped.items()},
                **{f"timing/{k}_s": v for k, v in s.items()}}

    # ------------------------------------------------------------------------------------------------
    # Loop, stop, publish
    # ------------------------------------------------------------------------------------------------

    def fit(self) -> None:
        """Train until total_steps, a stop request, or too many non-finite steps in a row."""
        s = self.cfg.schedule
        if self.restarted:
            self._publish()
        state, message = "done", f"finished {s.total_steps} steps"
        while self.step < s.total_steps:
            record = self.train_step()
            if record is None:
                state, message = "stopped", f"stopped at step {self.step} on request"
                break
            if self.rank == 0:
                self.store.report.remote([record])
            if self._agree(bool(self.sync_error)):
                state, message = "failed", f"{self.sync_error or 'rank 0 could not publish weights'}; stopped at " \
                    f"step {self.step} with a checkpoint"
                break
            if self.health["nonfinite_in_row"] >= (limit := self.cfg.faults.max_nonfinite_in_row):
                state = "failed"
                message = (f"loss or gradient was NaN/inf in {limit} steps in a row (at step "
                           f"{self.step}); lower optimizer.lr, check the reward model and data, or raise "
                           "faults.max_nonfinite_in_row")
                break
            if not record["skipped"] and self.step % self.cfg.checkpoint.interval == 0:
                self.checkpoint(record)
        self.checkpoint({"step": self.step, "version": self.version})
        if self.rank == 0:
            ray.get(self.store.set_status.remote(state, message, step=self.step, version=self.version))

    def _agree(self, flag: bool) -> bool:
        """True on every rank if `flag` is true on any rank (ranks must take the same branch)."""
        if self.world == 1 or not dist.is_initialized():
            return bool(flag)
        value = torch.tensor([1.0 if flag else 0.0])
        dist.all_reduce(value, op=dist.ReduceOp.MAX)
        return bool(value.item() > 0)

    def _stop_requested(self) -> bool:
        status = call_with_timeout(self.store.status.remote(), self.cfg.faults.sync_timeout_s,
                                   "learner: reading the run status")
        return status["state"] == "stop_requested"

    def _publish(self) -> None:
        """Rank 0 publishes the policy as `self.version`; a publish that does not answer in time ends the run."""
        if self.rank != 0:
            return
        call_with_timeout(self.store.publish.remote(self.version, self.step, state_to_numpy(self.policy)),
                          self.cfg.faults.sync_timeout_s, f"learner: publishing weights v{self.version}")

    def _make_source(self) -> Any:
        s, name = self.cfg.schedule, self.cfg.objective.name
        if name == "sft":
            table = caption_table(self.dataset.motion_ids, self.dataset.captions)
            return CaptionSource(table, self.cfg.seed, s.batch_size, self.rank, self.world)
        if name == "offline_dpo":
            return FixedPairSource(ray.get(self.setup["pairs"]), self.cfg.seed, s.batch_size, self.rank, self.world)
        return QueueSource(self.queue, s.batch_size, self.world)

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
        with tempfile.TemporaryDirectory() as tmp:
            config, data_id = config_to_dict(self.cfg), self.dataset.data_id
            policy = {k: v.detach().cpu() for k, v in self.policy.state_dict().items()}
            save_checkpoint(Path(tmp) / LEARNER_FILE, "trainer", {"policy": policy,
                            "optimizer": self.optimizer.state_dict()}, config, data_id, step=self.step,
                            version=self.version, health=dict(self.health), reference=self.setup["reference_id"],
                            tau=self.setup["tau"], kind_of_model=self.policy.kind)
            if self.queue is not None:
                save_checkpoint(Path(tmp) / PIPELINE_FILE, "pipeline", self._pipeline_state(), config, data_id,
                                step=self.step)
            ray.train.report(scalars, checkpoint=ray.train.Checkpoint.from_directory(tmp),
                             checkpoint_dir_name=f"step_{self.step:08d}")

    def _pipeline_state(self) -> dict[str, Any]:
        """Queue snapshot, its groups (unless keep_queue_on_resume is off) and the weights re-issued tickets need."""
        timeout = self.cfg.faults.sync_timeout_s
        snap = call_with_timeout(self.queue.snapshot.remote(), timeout, "learner: snapshotting the replay queue")
        refs = snap.pop("refs")
        groups = None
        if self.cfg.checkpoint.keep_queue_on_resume:
            groups = [g.to_state() for g in call_with_timeout([r[0] for r in refs], timeout, "learner: queue groups")]
        versions = {}
        if self.cfg.deterministic:  # tickets name exact versions: keep every one a resumed ticket may need
            window = range(max(0, self.version - self.cfg.schedule.max_staleness), self.version)
            for v in sorted({int(t[3]) for t in snap["reissue"]}.union(window) - {self.version}):
                _, state = fetch_weights(self.store, v, timeout, "learner checkpoint")
                versions[v] = {k: torch.from_numpy(np.array(a)) for k, a in state.items()}
        return {"queue": snap, "groups": groups, "versions": versions}

    def _restore(self) -> None:
        """Continue from the newest complete checkpoint in the run's storage, if there is one.

        That is Ray Train's registered checkpoint (`ray.train.get_checkpoint()`, after a restart in this session)
        or a newer one Ray Train had written but not yet registered when a worker died, or the newest checkpoint
        of an earlier session when the run is resumed. A checkpoint cut off by the crash is skipped for the one
        before it.
        """
        storage = RunStorage(self.setup["storage"])
        for _, folder in reversed(storage.checkpoints(LEARNER_FILE)):
            try:
                with local_copy(folder) as local:
                    payload = load_checkpoint(local / LEARNER_FILE, "trainer", self.dataset.data_id)
            except CheckpointError:
                continue
            self.policy.load_state_dict(payload["state"]["policy"])
            self.optimizer.load_state_dict(payload["state"]["optimizer"])
            self.step, self.version = int(payload["step"]), int(payload["version"])
            self.health.update(payload["health"])
            self.last_checkpoint_step = self.step
            return


class CountLearnerFailures(ray.train.UserCallback):
    """Ray Train callback (it runs in Train's controller): tell the weight store of every failed learner group, so
    `health/learner_restarts` counts each restart, also of a group that failed before its learners registered."""

    def __init__(self, store: Any) -> None:
        self.store = store

    def after_exception(self, run_context: Any, worker_exceptions: dict[int, Exception]) -> None:
        self.store.learner_failed.remote()


def train_loop_per_worker(setup: dict[str, Any]) -> None:
    """Ray Train entry point (`TorchTrainer(train_loop_per_worker, train_loop_config=setup, ...)`)."""
    Learner(setup).fit()
