"""The driver: one alignment run as a flat list of named stages, then `close()`.

`Driver.run` top to bottom:

    preflight   paths, the run directory's state (new run, resume point, finished), the memory estimate, trackers
    artifacts   dataset, base model, reward model, evaluator (built on first use, cached under workdir)
    connect     a local Ray or the cluster (cluster.address / `auto` inside `ray job submit`), resources
    run_dir     config.yaml, metrics.jsonl, Ray's log file, what the start found broken
    services    WeightStore, RunControl and (objectives with rollouts) ReplayQueue, all num_cpus=0 helpers;
                version 0 = the base weights, or, with --resume, the checkpoint's weights, queue and counters
    rollouts    the rollout pool (`pool.RolloutPool`: N RolloutWorker actors serving tickets; with
                cluster.autoscale it asks for nodes and grows as they arrive), or offline_dpo's fixed pairs
    learners    the learner group (`learner_group.LearnerGroup`: Ray Train's TorchTrainer, DDP, running
                `learner.train_loop_per_worker`, in a thread)
    watch       drain learner records, log queue and rollout health, live view; replace dead or hung workers,
                restore a restarted queue, turn SIGINT/SIGTERM into a stop with a final checkpoint
    finish      close the queue, write the aligned policy, evaluate it against the base, write the report
    close       kill the actors the run started (always, however the run ended)

The driver never touches tensors in the hot path; the schedule itself (which version each ticket needs, when
rollout must wait, what is too stale) lives in `schedule.SchedulePlan` and `ticket_board.TicketBoard`.
"""

from __future__ import annotations

import contextlib
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import ray
import yaml
from rich.console import Console
from rich.live import Live

from sopo_ray import artifacts, memory, trackers
from sopo_ray.config import Config, config_to_dict, with_absolute_paths
from sopo_ray.console import make_console
from sopo_ray.distributed import cluster, placement
from sopo_ray.distributed.control import RunControl
from sopo_ray.distributed.group import caption_table
from sopo_ray.distributed.learner import LearnerSetup
from sopo_ray.distributed.learner_group import LearnerGroup
from sopo_ray.distributed.monitor import PIPELINE_EVERY_S, LiveView
from sopo_ray.distributed.pool import RolloutPool, WorkerArgs
from sopo_ray.distributed.preflight import check_resume_point, preflight
from sopo_ray.distributed.ray_logs import RAY_LOG, RayOutput, driver_log_level
from sopo_ray.distributed.replay_queue import ReplayQueue
from sopo_ray.distributed.resume import ResumePoint, newest_loadable, restore_services
from sopo_ray.distributed.rollout import RolloutWorker
from sopo_ray.distributed.schedule import SchedulePlan
from sopo_ray.distributed.storage import RunStorage
from sopo_ray.distributed.summary import eval_record, print_summary
from sopo_ray.distributed.watch import PipelineWatch, request_stop
from sopo_ray.distributed.weights import WeightStore, publish_keys
from sopo_ray.objectives import objective
from sopo_ray.tracking import MetricsWriter

STOP_GRACE_S = 2.0
"""Seconds rollout workers get to return their stats after a stop by signal before they are killed."""


class Driver:
    """One alignment run in one run directory; `run()` returns the process exit status and closes the run."""

    def __init__(self, cfg: Config, run_dir: Path, *, resume: bool = False, console: Console | None = None,
                 worker_cls: type = RolloutWorker) -> None:
        self.cfg, self.run_dir, self.resume = cfg, Path(run_dir), resume
        self.console = console or make_console()
        self.worker_cls = worker_cls
        """The rollout actor class (tests pass a subclass that paces or breaks `generate`)."""
        self.spec = objective(cfg.objective.name)
        self.started, self.start_step = time.time(), 0
        self.view = LiveView(f"sopo_ray · {cfg.name} · {self.spec.name}", cfg.schedule.total_steps, self.spec.rollouts)
        self.exits = contextlib.ExitStack()
        # What the stages build, in their order.
        self.storage: RunStorage | None = None
        self.resume_point = ResumePoint()
        self.art: artifacts.Artifacts | None = None
        self.use_gpu = False
        self.metrics: MetricsWriter | None = None
        self.ray_output: RayOutput | None = None
        self.tau = cfg.objective.tau
        self.plan: SchedulePlan | None = None
        self.refs: dict[str, Any] = {}
        """Object refs of the base model's and the reward model's payloads and of the train split."""
        self.store: Any = None
        self.control: Any = None
        self.queue: Any = None
        self.pool: RolloutPool | None = None
        self.pipeline: PipelineWatch | None = None
        self.pairs: Any = None
        self.learners: LearnerGroup | None = None
        # How it is going.
        self.stop_signal = 0

    # ------------------------------------------------------------------------------------------------
    # The run
    # ------------------------------------------------------------------------------------------------

    def run(self) -> int:
        """Run (or resume) the alignment; 0 when it finished, 128+signal when stopped, 1 when it failed."""
        with self.exits:   # metrics, trackers and Ray's log file close however it ends
            try:
                self.preflight()   # everything that can refuse the run comes first: nothing is left behind
                self.load_artifacts()
                self.connect()
                self.open_run_dir()
                self.start_services()
                self.start_rollouts()
                self.start_learners()
                self.watch()
                return self.finish()
            finally:
                self.close()

    def preflight(self) -> None:
        """Paths made absolute (actors start elsewhere, a resumed run reads them from config.yaml), then every check
        that can refuse the run before anything is built."""
        cfg = self.cfg = with_absolute_paths(self.cfg)
        trackers.check_available(cfg.log)
        self.storage = RunStorage.for_run(cfg, self.run_dir)
        self.resume_point = preflight(cfg, self.run_dir, self.storage, self.resume, self.spec.rollouts)

    def load_artifacts(self) -> None:
        self.art = artifacts.resolve(self.cfg, self.console, need_evaluator=self.cfg.log.final_eval)
        check_resume_point(self.resume_point, self.art)

    def connect(self) -> None:
        """A local Ray or the cluster; the run's placements must fit it."""
        cfg = self.cfg
        joined = cluster.joins_cluster(cfg.cluster)
        info = cluster.connect(cfg.cluster, logging_level=driver_log_level(cfg.log.verbose))
        if joined:
            memory.check_fits(cfg, cluster.largest_node_memory(), "the cluster's largest node", whole_run=False)
        self.use_gpu = placement.check_resources(cfg)["use_gpu"]
        if cfg.cluster.rollout_resource and not cfg.cluster.learner_resource:
            self.console.print("[yellow]warning:[/] cluster.rollout_resource is set but cluster.learner_resource is "
                               "not: Ray may place learners on rollout nodes and leave rollout actors without room; "
                               "give learner nodes a custom resource and set cluster.learner_resource")
        self.console.print(f"ray: {info['num_nodes']} node(s), {info['num_cpus']:g} CPUs, {info['num_gpus']:g} GPUs; "
                           f"learners on {'GPU' if self.use_gpu else 'CPU'}")

    def open_run_dir(self) -> None:
        """config.yaml, metrics.jsonl and Ray's log; say what the start found broken and worked around (a cut-off
        metrics line, unreadable checkpoints skipped for an older complete one)."""
        cfg, point = self.cfg, self.resume_point
        self.run_dir.mkdir(parents=True, exist_ok=True)
        (self.run_dir / "config.yaml").write_text(yaml.safe_dump(config_to_dict(cfg), sort_keys=False))
        self.metrics = self.exits.enter_context(MetricsWriter(self.run_dir / "metrics.jsonl"))
        self.ray_output = self.exits.enter_context(RayOutput(self.run_dir / RAY_LOG, self.console, cfg.log.verbose))
        if self.metrics.dropped_tail:
            self.console.print(f"[yellow]warning:[/] metrics.jsonl ended in a cut-off line "
                               f"({len(self.metrics.dropped_tail)} characters); dropped it")
        for skipped in point.skipped:
            self.console.print(f"[yellow]warning:[/] skipping unreadable checkpoint {skipped}")
        if self.resume:
            self.metrics.log(point.step, event="resume", checkpoint=point.folder, skipped=point.skipped,
                             dropped_metrics_tail=self.metrics.dropped_tail)
        self.console.print(f"run directory: [bold]{self.run_dir}[/]")

    def start_services(self) -> None:
        """Object-store payloads, tau, the plan, and the helper actors at version 0 or, with --resume, at the
        newest checkpoint's version with its queue contents and counters; then the trackers."""
        cfg, art = self.cfg, self.art
        helper = placement.actor_options(cfg.cluster, "helper", self.use_gpu)
        self.refs = {"base": ray.put(art.base_payload), "reward": ray.put(art.reward_payload),
                     "train": ray.put(art.train)}
        self.tau = self._resolve_tau()
        self.plan = SchedulePlan.from_config(cfg, len(caption_table(art.train.motion_ids, art.train.captions)))
        self._warn_idle_workers()
        self.store = ray.remote(WeightStore).options(**helper).remote(self.plan.kept_versions)
        self.control = ray.remote(RunControl).options(**helper).remote(self.tau, max(64, 4 * cfg.schedule.batch_size))
        if self.spec.rollouts:
            self.queue = ray.remote(ReplayQueue).options(**helper, max_restarts=-1, max_task_retries=-1).remote(
                self.plan)
        point = self.resume_point
        if self.resume and point.folder is None:
            self.console.print("[yellow]no checkpoint in the run directory yet: starting from the base model[/]")
        self.start_step = restore_services(point, art.base_payload["state"], self.store, self.queue,
                                           publish_keys(cfg.schedule.publish_weights, art.base_payload))
        if point.learner is not None:
            self.console.print(f"resuming from {point.folder} (step {point.learner['step']}, "
                               f"version {point.learner['version']})")
        self.metrics.trackers += trackers.open_trackers(cfg, self.run_dir, resume=self.resume,
                                                        start_step=self.start_step)

    def start_rollouts(self) -> None:
        """The rollout pool for objectives with rollouts; offline_dpo's fixed pairs; nothing for SFT."""
        if self.spec.source == "fixed_pairs":
            pool = RolloutPool(self.cfg, self.use_gpu, self.worker_cls, self._worker_args(), None)
            n = min(self.cfg.objective.offline_pairs, self.plan.num_captions)
            self.pairs = ray.put(pool.fixed_pairs(self.run_dir / "offline_pairs.pt", self.plan.captions(0, n),
                                                  self.art.train.data_id, self.console))
        if not self.spec.rollouts:
            return
        self.pool = RolloutPool(self.cfg, self.use_gpu, self.worker_cls, self._worker_args(), self.queue)
        bundles = self.pool.request_autoscaling()
        if bundles:
            self.metrics.log(0, event="autoscale", requested_rollout_workers=self.cfg.cluster.num_rollout_workers,
                             bundles=bundles)
            self.console.print(f"autoscaler: asked for {len(bundles)} bundles (rollout pool + learners); the pool "
                               f"grows as nodes arrive")
        for change in self.pool.resize(set()):
            self.console.print(change, highlight=False)
        self.pipeline = PipelineWatch(self.cfg, self.queue, self.control, self.pool)

    def start_learners(self) -> None:
        """The learner group, fitting in a thread (its `fit()` blocks until the learners end)."""
        setup = LearnerSetup(cfg=self.cfg, base=self.refs["base"], dataset=self.refs["train"], store=self.store,
                             control=self.control, tau=self.tau, reference_id=self.art.reference_id,
                             storage=self.storage.root, queue=self.queue, pairs=self.pairs,
                             restarts_before=self._restarts_before())
        self.learners = LearnerGroup(self.cfg, setup, self.storage, self.control, self.use_gpu)
        self.learners.start()

    def watch(self) -> None:
        """Until the learners end: their records to metrics.jsonl, the pipeline's health, faults, signals."""
        live_ok = self.cfg.log.live_view and self.console.is_terminal
        last_pipeline, stop_sent = 0.0, False
        with self._signals(), Live(self.view.render(), console=self.console, refresh_per_second=2) if live_ok \
                else contextlib.nullcontext() as live:
            while self.learners.running():
                if self.stop_signal and not stop_sent:
                    request_stop(self.control, self.queue, "signal")
                    stop_sent = True
                self._drain()
                now = time.time()
                if self.pipeline is not None and now - last_pipeline >= PIPELINE_EVERY_S:
                    last_pipeline = now
                    self._log_pipeline(*self.pipeline.tick())
                if live is not None:
                    live.update(self.view.render())
                elif (line := self.view.log_line(now)) is not None:
                    self.console.print(line, highlight=False)
                self.learners.wait(0.5)
            self._drain()
            self.view.message = ("learners failed" if self.learners.error is not None
                                 else "stopped" if self.stop_signal else "learners finished")
            if live is not None:
                live.update(self.view.render())
        if not live_ok and (line := self.view.log_line(time.time(), final=True)) is not None:
            self.console.print(line, highlight=False)

    def finish(self) -> int:
        """Close the pipeline, log how the run ended, save the policy; evaluate and summarise a finished run."""
        failure = ""
        if self.pipeline is not None:
            # On Ctrl-C do not wait for a rollout batch to finish (it may take minutes); its tickets are checkpointed.
            grace = STOP_GRACE_S if self.stop_signal else self.cfg.faults.sync_timeout_s
            self._log_pipeline(self.pipeline.finish(grace), [], final=True)
            failure = self.pipeline.failure
        status = ray.get(self.control.status.remote())
        if failure:
            status = {**status, "state": "failed", "message": failure}
        health = {**self._fault_counts(), "learner_restarts": self._restarts_before() + status["learner_restarts"]}
        self.metrics.log(status.get("step", 0), event="run", state=status["state"], message=status["message"],
                         **{f"health/{k}": v for k, v in health.items()})
        if self.learners.error is not None:
            self.console.print(f"[red]error:[/] the learners failed: {str(self.learners.error).splitlines()[0]} "
                               f"(Ray's output: {self.ray_output.path})")
            return 1
        policy_path = self._save_policy()
        if failure:
            self.console.print(f"[red]error:[/] {failure}; last checkpoint kept, --resume continues")
            return 1
        if status["state"] == "failed":
            self.console.print(f"[red]error:[/] {status['message']}")
            return 1
        if status["state"] != "done":
            self.console.print(f"stopped at step {status.get('step')}; final checkpoint written. Continue with:\n"
                               f"  python -m sopo_ray.run --resume {self.run_dir}")
            return 128 + (self.stop_signal or signal.SIGINT)
        report = None
        if self.cfg.log.final_eval:
            from sopo_ray.distributed.dashboard import plot_dashboard
            from sopo_ray.evaluation.report import evaluate_and_report

            report = evaluate_and_report(self.cfg, self.art, policy_path, self.run_dir, self.console)
            plot_dashboard(self.run_dir / "metrics.jsonl", self.run_dir / "dashboard.png")
            self.metrics.log(status.get("step", 0), event="eval", **eval_record(report))
        print_summary(self.console, self.run_dir, objective=self.spec.name, steps=status.get("step"),
                      elapsed_s=time.time() - self.started, policy=policy_path, report=report,
                      trackers=self.metrics.trackers, ray_log=self.ray_output.where())
        return 0

    def close(self) -> None:
        """Kill the actors this run started (rollout workers, replay queue, run control, weight store). Safe to
        call again; `run()` calls it however the run ended."""
        if self.pool is not None:
            self.pool.shutdown(0.0)
        for name in ("queue", "control", "store"):
            actor, handle = getattr(self, name), None
            setattr(self, name, handle)
            if actor is not None:
                with contextlib.suppress(Exception):   # already dead, or Ray is gone
                    ray.kill(actor, no_restart=True)

    # ------------------------------------------------------------------------------------------------
    # Helpers of the stages
    # ------------------------------------------------------------------------------------------------

    def _resolve_tau(self) -> float:
        """objective.tau, or its calibration from the train pairs or the base policy's groups (`calibrate_tau`)."""
        from sopo_ray.algorithm import calibrate_tau
        from sopo_ray.models.generator import generator_from_payload
        from sopo_ray.reward.oracle import rollout_reward

        o, art = self.cfg.objective, self.art
        if o.tau_quantile is None and o.tau_gate is None:
            return o.tau
        reward = rollout_reward(self.cfg.reward.kind, art.reward_payload, art.train)
        tau = calibrate_tau(self.cfg, generator_from_payload(art.base_payload).eval(), reward, art.train)
        self.console.print(f"tau calibrated to {tau:.4f}")
        return tau

    def _warn_idle_workers(self) -> None:
        """Say when the schedule cannot keep every rollout worker busy, and what would."""
        s, busy, workers = self.cfg.schedule, self.plan.max_busy_workers, self.cfg.cluster.num_rollout_workers
        if self.spec.rollouts and workers > busy:
            self.console.print(
                f"[yellow]warning:[/] this schedule keeps at most {busy} of {workers} rollout workers "
                f"busy (tickets of {self.plan.rollout_batch_size} captions, sync_interval {s.sync_interval}, "
                f"max_staleness {s.max_staleness}, rollout_ahead {s.rollout_ahead}); to feed them all set "
                f"schedule.rollout_batch_size <= {max(1, busy * self.plan.rollout_batch_size // workers)}"
                f" or raise sync_interval/max_staleness (docs/scaling.md 1.1)")

    def _worker_args(self) -> WorkerArgs:
        return WorkerArgs(self.refs["base"], self.refs["reward"], self.refs["train"], self.store, self.control,
                          self.spec.keeps_best)

    def _restarts_before(self) -> int:
        """Learner restarts of the run's earlier sessions (from the checkpoint a resumed run continues from)."""
        learner = self.resume_point.learner
        return int(learner["health"].get("learner_restarts", 0)) if learner else 0

    def _fault_counts(self) -> dict[str, int]:
        return self.pipeline.fault_counts() if self.pipeline is not None else {"queue_restart": 0}

    @contextlib.contextmanager
    def _signals(self) -> Iterator[None]:
        """SIGINT/SIGTERM ask for a clean stop (final checkpoint); a second one aborts at once."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return

        def handler(signum: int, frame: Any) -> None:
            if self.stop_signal:
                raise KeyboardInterrupt
            self.stop_signal = signum
            self.view.message = f"{signal.Signals(signum).name}: stopping after the current step (again to abort)"

        previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for sig, old in previous.items():
                signal.signal(sig, old)

    def _drain(self) -> None:
        for record in ray.get(self.control.drain.remote()):
            self.view.step = record
            self.metrics.log(record["step"], event="step", **{k: v for k, v in record.items() if k != "step"})

    def _log_pipeline(self, record: dict[str, Any] | None, changes: list[str], **extra: Any) -> None:
        if record is not None:
            self.view.pipeline = record
            self.metrics.log(record.pop("step"), event="pipeline", **extra, **record)
        for change in changes:
            self.view.message = change
            self.console.print(f"[yellow]{change}[/]", highlight=False)

    def _save_policy(self) -> Path | None:
        """The aligned generator of the newest checkpoint as `policy.pt` (loadable by `sopo generate/evaluate`)."""
        from sopo_ray.models.generator import generator_from_payload, save_generator

        art = self.art
        payload = newest_loadable(self.storage, art.train.data_id).learner
        if payload is None:
            return None
        gen = generator_from_payload(art.base_payload)
        gen.load_state_dict(payload["state"]["policy"])
        path = save_generator(self.run_dir / "policy.pt", gen, self.cfg, art.train.data_id,
                              aligned_from=art.reference_id, objective=self.spec.name, step=payload["step"],
                              version=payload["version"])
        self.console.print(f"aligned policy (step {payload['step']}): {path}")
        return path


def default_run_dir(cfg: Config) -> Path:
    """runs/<name>-<YYYYmmdd-HHMMSS>."""
    return Path("runs") / f"{cfg.name}-{time.strftime('%Y%m%d-%H%M%S')}"
