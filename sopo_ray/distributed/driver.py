"""The driver: builds the actors, enforces the semi-online schedule, watches the pipeline, stops cleanly.

`Driver.run` top to bottom:

    preflight     paths, the run directory's state (new run, resume point, finished), the memory estimate
    artifacts     dataset, base model, reward model, evaluator (built on first use, cached under workdir)
    connect       a local Ray or the cluster (cluster.address / `auto` inside `ray job submit`)
    services      WeightStore and ReplayQueue (num_cpus=0 helpers); version 0 = the base weights,
                  or, with --resume, the newest checkpoint's weights, queue contents and counters
    rollout pool  N RolloutWorker actors placed by cluster resources, each serving tickets in a loop
                  (`pool.RolloutPool`; with cluster.autoscale it asks for nodes and grows as they arrive)
    learners      Ray Train TorchTrainer (DDP) running `learner.train_loop_per_worker`, in a thread
    monitor       drain learner records, poll queue stats, log JSONL, live view; replace dead or hung
                  workers, restore a restarted queue, turn SIGINT/SIGTERM into a stop with a final checkpoint
    finish        close the queue, write the aligned policy, evaluate it against the base, write the report

The driver never touches tensors in the hot path; the schedule itself (which version each ticket needs, when
rollout must wait, what is too stale) lives in `schedule.SchedulePlan` and is enforced by the ReplayQueue.
"""

from __future__ import annotations

import contextlib
import signal
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import ray
import yaml
from ray.exceptions import GetTimeoutError, RayActorError
from rich.console import Console
from rich.live import Live

from sopo_ray import artifacts, memory, trackers
from sopo_ray.checkpoint import load_checkpoint, save_checkpoint
from sopo_ray.config import Config, config_to_dict, with_absolute_paths
from sopo_ray.console import make_console
from sopo_ray.distributed import cluster
from sopo_ray.distributed.group import RolloutGroup, caption_table
from sopo_ray.distributed.learner import CountLearnerFailures, train_loop_per_worker
from sopo_ray.distributed.monitor import PIPELINE_EVERY_S, LiveView, pipeline_record
from sopo_ray.distributed.pool import RolloutPool
from sopo_ray.distributed.preflight import check_resume_point, newest_loadable, preflight
from sopo_ray.distributed.ray_logs import RAY_LOG, RayOutput, driver_log_level, train_logging
from sopo_ray.distributed.replay_queue import ReplayQueue
from sopo_ray.distributed.rollout import RolloutWorker
from sopo_ray.distributed.schedule import SchedulePlan
from sopo_ray.distributed.storage import RunStorage
from sopo_ray.distributed.summary import eval_record, print_summary
from sopo_ray.tracking import MetricsWriter

ONLINE = ("sopo", "online_dpo")
STOP_GRACE_S = 2.0
"""Seconds rollout workers get to return their stats after a stop by signal before they are killed."""


class Driver:
    """One alignment run in one run directory; `run()` returns the process exit status."""

    def __init__(self, cfg: Config, run_dir: Path, *, resume: bool = False, console: Console | None = None,
                 worker_cls: type = RolloutWorker) -> None:
        self.cfg, self.run_dir, self.resume = cfg, Path(run_dir), resume
        self.console = console or make_console()
        self.started, self.start_step = time.time(), 0
        self.worker_cls = worker_cls
        self.objective = cfg.objective.name
        self.pool: RolloutPool | None = None
        self.faults: Counter[str] = Counter({"queue_restart": 0})
        self.stop_signal = 0
        self.fit_error: BaseException | None = None
        self.failure = ""
        self.queue: Any = None
        self.mirror: dict[str, Any] | None = None
        self.view = LiveView(f"sopo_ray · {cfg.name} · {self.objective}", cfg.schedule.total_steps,
                             self.objective in ONLINE)

    # ------------------------------------------------------------------------------------------------
    # The run
    # ------------------------------------------------------------------------------------------------

    def run(self) -> int:
        """Run (or resume) the alignment; 0 when it finished, 128+signal when stopped, 1 when it failed."""
        with contextlib.ExitStack() as self.exits:  # metrics, trackers and Ray's log file close however it ends
            return self._run()

    def _run(self) -> int:
        cfg = self.cfg
        # Everything that can refuse the run comes first, so a refused run leaves no run directory behind.
        # Paths are made absolute first: actors start elsewhere, and a resumed run reads them from config.yaml.
        cfg = self.cfg = with_absolute_paths(cfg)
        trackers.check_available(cfg.log)
        self.storage = RunStorage.for_run(cfg, self.run_dir)
        self.resume_point = preflight(cfg, self.run_dir, self.storage, self.resume, self.objective in ONLINE)
        art = artifacts.resolve(cfg, self.console, need_evaluator=cfg.log.final_eval)
        check_resume_point(self.resume_point, art)
        joined = cluster.joins_cluster(cfg.cluster)
        info = cluster.connect(cfg.cluster, logging_level=driver_log_level(cfg.log.verbose))
        if joined:
            memory.check_fits(cfg, cluster.largest_node_memory(), "the cluster's largest node", whole_run=False)
        placement = cluster.check_resources(cfg)
        self.use_gpu = placement["use_gpu"]
        if cfg.cluster.rollout_resource and not cfg.cluster.learner_resource:
            self.console.print("[yellow]warning:[/] cluster.rollout_resource is set but cluster.learner_resource is "
                               "not: Ray may place learners on rollout nodes and leave rollout actors without room; "
                               "give learner nodes a custom resource and set cluster.learner_resource")
        self.console.print(f"ray: {info['num_nodes']} node(s), {info['num_cpus']:g} CPUs, {info['num_gpus']:g} GPUs; "
                           f"learners on {'GPU' if self.use_gpu else 'CPU'}")
        self.run_dir.mkdir(parents=True, exist_ok=True)
        (self.run_dir / "config.yaml").write_text(yaml.safe_dump(config_to_dict(cfg), sort_keys=False))
        self.metrics = MetricsWriter(self.run_dir / "metrics.jsonl")
        self.exits.callback(self.metrics.close)
        self.ray_output = self.exits.enter_context(RayOutput(self.run_dir / RAY_LOG, self.console, cfg.log.verbose))
        self._note_repairs()
        self.console.print(f"run directory: [bold]{self.run_dir}[/]")
        self._start_services(art)
        self.metrics.trackers += trackers.open_trackers(cfg, self.run_dir, resume=self.resume,
                                                        start_step=self.start_step)
        pairs_ref = self._offline_pairs(art) if self.objective == "offline_dpo" else None
        if self.objective in ONLINE:
            self._start_pool()
        thread = self._start_learners(art, pairs_ref)
        with self._signals():
            self._monitor(thread)
        self._finish_pipeline()
        status = ray.get(self.store.status.remote())
        if self.failure:
            status = {**status, "state": "failed", "message": self.failure}
        health = {**self._fault_counts(), "learner_restarts": self._restarts_before() + status["learner_restarts"]}
        self.metrics.log(status.get("step", 0), event="run", state=status["state"], message=status["message"],
                         **{f"health/{k}": v for k, v in health.items()})
        if self.fit_error is not None:
            self.console.print(f"[red]error:[/] the learners failed: {str(self.fit_error).splitlines()[0]} "
                               f"(Ray's output: {self.ray_output.path})")
            return 1
        if self.failure:
            self._save_policy(art)
            self.console.print(f"[red]error:[/] {self.failure}; last checkpoint kept, --resume continues")
            return 1
        policy_path = self._save_policy(art)
        if status["state"] == "failed":
            self.console.print(f"[red]error:[/] {status['message']}")
            return 1
        if status["state"] != "done":
            self.console.print(f"stopped at step {status.get('step')}; final checkpoint written. Continue with:\n"
                               f"  python -m sopo_ray.run --resume {self.run_dir}")
            return 128 + (self.stop_signal or signal.SIGINT)
        report = None
        if cfg.log.final_eval:
            from sopo_ray.distributed.report import evaluate_and_report

            report = evaluate_and_report(cfg, art, policy_path, self.run_dir, self.console)
            self.metrics.log(status.get("step", 0), event="eval", **eval_record(report))
        print_summary(self.console, self.run_dir, objective=self.objective, steps=status.get("step"),
                      elapsed_s=time.time() - self.started, policy=policy_path, report=report,
                      trackers=self.metrics.trackers, ray_log=self.ray_output.where())
        return 0

    # ------------------------------------------------------------------------------------------------
    # Services, pool, learners
    # ------------------------------------------------------------------------------------------------

    def _start_services(self, art: artifacts.Artifacts) -> None:
        """Object-store payloads, the WeightStore and (online objectives) the ReplayQueue, at version 0 or, with
        --resume, at the newest checkpoint's version with its queue contents and counters."""
        from sopo_ray.distributed.weights import WeightStore

        cfg, s = self.cfg, self.cfg.schedule
        helper = cluster.actor_options(cfg.cluster, "helper", self.use_gpu)
        self.base_ref, self.reward_ref = ray.put(art.base_payload), ray.put(art.reward_payload)
        self.train_ref = ray.put(art.train)
        self.tau = self._resolve_tau(art)
        self.table = caption_table(art.train.motion_ids, art.train.captions)
        self.plan = SchedulePlan.from_config(cfg, len(self.table))
        busy = self.plan.max_busy_workers
        workers = cfg.cluster.num_rollout_workers
        if self.objective in ONLINE and workers > busy:
            self.console.print(
                f"[yellow]warning:[/] this schedule keeps at most {busy} of {workers} rollout workers "
                f"busy (tickets of {self.plan.rollout_batch_size} captions, sync_interval {s.sync_interval}, "
                f"max_staleness {s.max_staleness}, rollout_ahead {s.rollout_ahead}); to feed them all set "
                f"schedule.rollout_batch_size <= {max(1, busy * self.plan.rollout_batch_size // workers)}"
                f" or raise sync_interval/max_staleness (docs/scaling.md 1.1)")
        self.store = ray.remote(WeightStore).options(**helper).remote(s.max_staleness + 3)
        if self.objective in ONLINE:
            self.queue = ray.remote(ReplayQueue).options(**helper, max_restarts=-1, max_task_retries=-1).remote(
                self.plan, self.tau)
        point = self.resume_point
        folder, learner, pipeline = point.folder, point.learner, point.pipeline
        if self.resume and folder is None:
            self.console.print("[yellow]no checkpoint in the run directory yet: starting from the base model[/]")
        if folder is None:
            state = {k: v.numpy() for k, v in art.base_payload["state"].items()}
            ray.get(self.store.publish.remote(0, 0, state))
            return
        if pipeline is not None:
            for v, state in sorted(pipeline["versions"].items()):
                ray.get(self.store.publish.remote(int(v), 0, {k: t.numpy() for k, t in state.items()}))
            groups = None
            if pipeline["groups"] is not None:
                groups = [RolloutGroup.from_state(g) for g in pipeline["groups"]]
            ray.get(self.queue.restore.remote(pipeline["queue"], groups, "resume"))
        policy = {k: v.numpy() for k, v in learner["state"]["policy"].items()}
        self.start_step = int(learner["step"])
        ray.get(self.store.publish.remote(int(learner["version"]), int(learner["step"]), policy))
        self.console.print(f"resuming from {folder} (step {learner['step']}, version {learner['version']})")

    def _resolve_tau(self, art: artifacts.Artifacts) -> float:
        """objective.tau, or its calibration from the train pairs or the base policy's groups (`calibrate_tau`)."""
        from sopo_ray.algorithm import calibrate_tau
        from sopo_ray.models.generator import generator_from_payload
        from sopo_ray.reward.oracle import rollout_reward

        o = self.cfg.objective
        if o.tau_quantile is None and o.tau_gate is None:
            return o.tau
        reward = rollout_reward(self.cfg.reward.kind, art.reward_payload, art.train)
        tau = calibrate_tau(self.cfg, generator_from_payload(art.base_payload).eval(), reward, art.train)
        self.console.print(f"tau calibrated to {tau:.4f}")
        return tau

    def _start_pool(self) -> None:
        args = (self.base_ref, self.reward_ref, self.train_ref, self.queue, self.store, self.objective != "sopo",
                self.use_gpu)
        self.pool = RolloutPool(self.cfg, self.use_gpu, self.worker_cls, args, self.queue)
        bundles = self.pool.request_autoscaling()
        if bundles:
            self.metrics.log(0, event="autoscale", requested_rollout_workers=self.cfg.cluster.num_rollout_workers,
                             bundles=bundles)
            self.console.print(f"autoscaler: asked for {len(bundles)} bundles (rollout pool + learners); the pool "
                               f"grows as nodes arrive")
        for change in self.pool.resize(set()):
            self.console.print(change, highlight=False)

    def _note_repairs(self) -> None:
        """Say (and log) what the start found broken and worked around: a cut-off metrics line, unreadable
        checkpoints skipped for an older complete one."""
        point = self.resume_point
        if self.metrics.dropped_tail:
            self.console.print(f"[yellow]warning:[/] metrics.jsonl ended in a cut-off line "
                               f"({len(self.metrics.dropped_tail)} characters); dropped it")
        for skipped in point.skipped:
            self.console.print(f"[yellow]warning:[/] skipping unreadable checkpoint {skipped}")
        if self.resume:
            self.metrics.log(point.step, event="resume", checkpoint=point.folder, skipped=point.skipped,
                             dropped_metrics_tail=self.metrics.dropped_tail)

    def _restarts_before(self) -> int:
        """Learner restarts of the run's earlier sessions (from the checkpoint a resumed run continues from)."""
        learner = self.resume_point.learner
        return int(learner["health"].get("learner_restarts", 0)) if learner else 0

    def _fault_counts(self) -> dict[str, int]:
        return {**(self.pool.faults if self.pool else {}), **self.faults}

    def _offline_pairs(self, art: artifacts.Artifacts) -> Any:
        """offline_dpo: best-vs-worst pairs sampled ONCE from the reference (version 0), cached in the run dir."""
        path = self.run_dir / "offline_pairs.pt"
        if path.is_file():
            groups = [RolloutGroup.from_state(g) for g in load_checkpoint(path, "offline_pairs")["state"]["groups"]]
            self.console.print(f"offline pairs: {len(groups)} from {path}")
            return ray.put(groups)
        n = min(self.cfg.objective.offline_pairs, len(self.table))
        captions = self.plan.captions(0, n)
        options = cluster.actor_options(self.cfg.cluster, "rollout", self.use_gpu)
        workers = [ray.remote(self.worker_cls).options(**options).remote(
            f"pairs-{i}", self.cfg, self.base_ref, self.reward_ref, self.train_ref, None, self.store, True,
            self.use_gpu) for i in range(self.cfg.cluster.num_rollout_workers)]
        self.console.print(f"sampling {n} offline pairs from the reference model ({len(workers)} workers)")
        chunk = self.cfg.schedule.rollout_batch_size
        futures = [workers[i % len(workers)].generate.remote(captions[s:s + chunk], 0,
                                                             list(range(s, min(s + chunk, n))))
                   for i, s in enumerate(range(0, n, chunk))]
        groups = [g for batch in ray.get(futures) for g in batch]
        for w in workers:
            ray.kill(w)
        save_checkpoint(path, "offline_pairs", {"groups": [g.to_state() for g in groups]}, config_to_dict(self.cfg),
                        art.train.data_id)
        return ray.put(groups)

    def _start_learners(self, art: artifacts.Artifacts, pairs_ref: Any) -> threading.Thread:
        from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
        from ray.train.torch import TorchTrainer

        cfg = self.cfg
        session = self.storage.new_session()
        setup = {"cfg": cfg, "base": self.base_ref, "dataset": self.train_ref, "queue": self.queue,
                 "store": self.store, "pairs": pairs_ref, "tau": self.tau, "reference_id": art.reference_id,
                 "storage": self.storage.root, "restarts_before": self._restarts_before()}
        trainer = TorchTrainer(
            train_loop_per_worker, train_loop_config=setup,
            scaling_config=ScalingConfig(num_workers=cfg.cluster.num_learners, use_gpu=self.use_gpu,
                                         resources_per_worker=cluster.train_resources_per_worker(cfg.cluster,
                                                                                                 self.use_gpu)),
            run_config=RunConfig(name=session, storage_path=self.storage.root,
                                 failure_config=FailureConfig(max_failures=cfg.faults.max_learner_failures),
                                 callbacks=[CountLearnerFailures(self.store)],
                                 checkpoint_config=CheckpointConfig(num_to_keep=cfg.checkpoint.keep),
                                 logging_config=train_logging(cfg.log.verbose)))

        def fit() -> None:
            try:
                trainer.fit()
            except BaseException as exc:  # noqa: BLE001 - reported by the driver thread
                self.fit_error = exc

        thread = threading.Thread(target=fit, name="ray-train-fit", daemon=True)
        thread.start()
        return thread

    # ------------------------------------------------------------------------------------------------
    # Monitoring, faults, stopping
    # ------------------------------------------------------------------------------------------------

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

    def _monitor(self, thread: threading.Thread) -> None:
        live_ok = self.cfg.log.live_view and self.console.is_terminal
        last_pipeline, stop_sent = 0.0, False
        with Live(self.view.render(), console=self.console, refresh_per_second=2) if live_ok \
                else contextlib.nullcontext() as live:
            while thread.is_alive():
                if self.stop_signal and not stop_sent:
                    self._request_stop("signal")
                    stop_sent = True
                self._drain()
                now = time.time()
                if self.queue is not None and now - last_pipeline >= PIPELINE_EVERY_S:
                    last_pipeline = now
                    self._watch_pipeline()
                if live is not None:
                    live.update(self.view.render())
                elif (line := self.view.log_line(now)) is not None:
                    self.console.print(line, highlight=False)
                thread.join(timeout=0.5)
            self._drain()
            self.view.message = ("learners failed" if self.fit_error is not None
                                 else "stopped" if self.stop_signal else "learners finished")
            if live is not None:
                live.update(self.view.render())
        if not live_ok and (line := self.view.log_line(time.time(), final=True)) is not None:
            self.console.print(line, highlight=False)

    def _drain(self) -> None:
        for record in ray.get(self.store.drain.remote()):
            self.view.step = record
            self.metrics.log(record["step"], event="step", **{k: v for k, v in record.items() if k != "step"})

    def _watch_pipeline(self) -> None:
        """Log queue/rollout health; recover a restarted queue; replace dead and hung rollout workers."""
        try:
            stats = ray.get(self.queue.stats.remote(), timeout=30)
        except (RayActorError, GetTimeoutError):
            return
        if stats["restoring"] and self.mirror is not None:
            ray.get(self.queue.restore.remote(self.mirror, None, "queue_restart"))
            self.faults["queue_restart"] += 1
            self.view.message = "replay queue restarted: its groups are counted as dropped (queue_restart)"
            self.console.print(f"[yellow]{self.view.message}[/]")
            return
        if not stats["restoring"]:
            self.mirror = ray.get(self.queue.snapshot.remote(False))
        self._note_queue_failure(stats)
        record = {**pipeline_record(stats, self._fault_counts()), "rollout/pool_target": self.pool.size_target}
        self.view.pipeline = record
        self.metrics.log(stats["learner_step"], event="pipeline", version=stats["learner_version"], **record)
        changes = self.pool.check(stats)
        if self.pool.failure and not self.failure:
            self.failure = self.pool.failure
            self._request_stop("too many rollout worker failures")
            return
        if self.cfg.cluster.autoscale:
            changes += self.pool.resize(set(stats["workers"]))
        for change in changes:
            self.view.message = change
            self.console.print(f"[yellow]{change}[/]", highlight=False)

    def _note_queue_failure(self, stats: dict[str, Any]) -> None:
        """The queue closed itself (NaN/inf rewards in a row): the learners stop, and the run fails with its message."""
        if stats.get("failure") and not self.failure:
            self.failure = stats["failure"]
            self._request_stop("replay queue failure")

    def _request_stop(self, reason: str) -> None:
        ray.get(self.store.request_stop.remote(reason))
        if self.queue is not None:
            ray.get(self.queue.close.remote(reason))

    def _finish_pipeline(self) -> None:
        """Close the queue, collect the workers' last stats, and log the final pipeline record."""
        if self.queue is None:
            return
        ray.get(self.queue.close.remote("done"))
        # On Ctrl-C do not wait for a rollout batch to finish (it may take minutes); its tickets are in the checkpoint.
        self.pool.shutdown(STOP_GRACE_S if self.stop_signal else self.cfg.faults.sync_timeout_s)
        stats = ray.get(self.queue.stats.remote())
        self._note_queue_failure(stats)
        record = pipeline_record(stats, self._fault_counts())
        self.view.pipeline = record
        self.metrics.log(stats["learner_step"], event="pipeline", version=stats["learner_version"], final=True,
                         **record)

    def _save_policy(self, art: artifacts.Artifacts) -> Path | None:
        """The aligned generator of the newest checkpoint as `policy.pt` (loadable by `sopo generate/evaluate`)."""
        from sopo_ray.models.generator import generator_from_payload, save_generator

        payload = newest_loadable(self.storage, art.train.data_id).learner
        if payload is None:
            return None
        gen = generator_from_payload(art.base_payload)
        gen.load_state_dict(payload["state"]["policy"])
        path = save_generator(self.run_dir / "policy.pt", gen, self.cfg, art.train.data_id,
                              aligned_from=art.reference_id, objective=self.objective, step=payload["step"],
                              version=payload["version"])
        self.console.print(f"aligned policy (step {payload['step']}): {path}")
        return path


def default_run_dir(cfg: Config) -> Path:
    """runs/<name>-<YYYYmmdd-HHMMSS>."""
    return Path("runs") / f"{cfg.name}-{time.strftime('%Y%m%d-%H%M%S')}"
