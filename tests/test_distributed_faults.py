"""Faults injected into a running trainer (real local Ray, tiny models): a rollout worker that hangs through a
weight sync, a rollout worker killed by its handle, and the replay queue actor killed. The run must finish with
every step trained once, counters that add up, and each fault counted."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import ray

from sopo_ray.config import load_config
from sopo_ray.distributed.driver import Driver
from sopo_ray.distributed.learner import LEARNER_FILE
from sopo_ray.distributed.rollout import RolloutWorker
from sopo_ray.distributed.storage import RunStorage
from sopo_ray.tracking import read_metrics

REPO = Path(__file__).resolve().parents[1]
pytestmark = [pytest.mark.ray, pytest.mark.slow]


def logged_steps(run_dir: Path) -> list[int]:
    """The learner steps the run has logged so far (none before its metrics file exists)."""
    path = run_dir / "metrics.jsonl"
    return [r["step"] for r in read_metrics(path) if r.get("event") == "step"] if path.is_file() else []


@contextmanager
def beside_the_run(inject: Callable[[threading.Event], None]) -> Iterator[None]:
    """Run `inject(finished)` on a thread while the body runs the driver; `finished` is set once the body ends, so
    the injector waits for its step however long the run takes (no wall-clock deadline on a loaded machine)."""
    finished = threading.Event()
    injector = threading.Thread(target=inject, args=(finished,), daemon=True)
    injector.start()
    try:
        yield
    finally:
        finished.set()
        injector.join()


def test_hung_worker_dead_worker_and_dead_queue_are_survived(ray_cluster, smoke_workdir, tmp_path):
    class SleepyWorker(RolloutWorker):
        """The first worker sleeps through its first batch (it never picks up new weights); the others take
        >= 0.3 s per batch, so the tiny learner cannot finish before the faults are injected."""

        def generate(self, caption_indices, version, positions=None, ticket=-1):
            time.sleep(3600 if self.name == "rollout-0" else 0.3)
            return super().generate(caption_indices, version, positions, ticket)

    run_dir = tmp_path / "run"
    cfg = load_config(REPO / "configs" / "smoke.yaml", [
        f"workdir={smoke_workdir}", f"data.root={smoke_workdir}/data", "schedule.total_steps=12",
        "faults.sync_timeout_s=20", "log.final_eval=false"])
    driver = Driver(cfg, run_dir, worker_cls=SleepyWorker)
    injected: list[str] = []

    def inject(finished: threading.Event) -> None:
        """Each fault once its step is reached, for as long as the run lasts."""
        while not finished.is_set() and not injected:
            healthy = [name for name in driver.pool.workers if name != "rollout-0"] if driver.pool else []
            if max(logged_steps(run_dir), default=0) >= 3 and healthy:
                ray.kill(driver.pool.workers[healthy[0]][0])
                injected.append("worker")
            time.sleep(0.2)
        while not finished.is_set() and len(injected) < 2:
            mirrored = driver.pipeline is not None and driver.pipeline.mirror is not None
            if max(logged_steps(run_dir), default=0) >= 6 and mirrored:
                ray.kill(driver.queue, no_restart=False)
                injected.append("queue")
            time.sleep(0.2)

    with beside_the_run(inject):
        assert driver.run() == 0
    assert injected == ["worker", "queue"]
    records = list(read_metrics(run_dir / "metrics.jsonl"))
    step_records = [r for r in records if r.get("event") == "step"]
    assert sorted({r["step"] for r in step_records}) == list(range(1, 13))
    assert all(0 <= x <= cfg.schedule.max_staleness for r in step_records for x in r["health/staleness"])
    final = [r for r in records if r.get("event") == "pipeline"][-1]
    dropped = sum(v for k, v in final.items() if k.startswith("queue/dropped_"))
    assert final["queue/accounting_ok"]
    assert final["queue/generated"] == final["queue/consumed"] + dropped + final["queue/size"]
    assert final["health/worker_sync_timeout"] == 1 and final["health/worker_replaced"] == 2
    assert final["health/queue_restart"] == 1


def test_nonfinite_loss_is_skipped_counted_and_stops_the_run(ray_cluster, smoke_workdir, tmp_path):
    """An absurd learning rate blows the weights up after one update; every later loss is NaN/inf, so the updates
    are skipped and counted, and after 2 in a row the run stops with a checkpoint and a clear message (exit 1)."""
    run_dir = tmp_path / "run"
    cfg = load_config(REPO / "configs" / "smoke.yaml", [
        f"workdir={smoke_workdir}", f"data.root={smoke_workdir}/data", "optimizer.lr=1e30", "optimizer.warmup_steps=1",
        "optimizer.grad_clip=0", "faults.max_nonfinite_in_row=2", "log.final_eval=false"])
    assert Driver(cfg, run_dir).run() == 1
    records = list(read_metrics(run_dir / "metrics.jsonl"))
    steps = [r for r in records if r.get("event") == "step"]
    skipped = [r for r in steps if r["skipped"]]
    assert len(skipped) == 2 and skipped[-1]["health/nonfinite_in_row"] == 2
    assert all(r["step"] == skipped[0]["step"] for r in skipped)       # a skipped update does not count as a step
    run = [r for r in records if r.get("event") == "run"][-1]
    assert run["state"] == "failed" and "NaN/inf" in run["message"]
    assert (run_dir / "policy.pt").is_file()


def test_nonfinite_rewards_in_a_row_stop_the_run(ray_cluster, smoke_workdir, tmp_path):
    """A reward model that returns NaN for every sample: its groups are dropped as 'nonfinite' (never trained), and
    after max_nonfinite_in_row steps' worth of them in a row the queue closes and the run fails clearly (exit 1)."""

    class NaNRewardWorker(RolloutWorker):
        def generate(self, caption_indices, version, positions=None, ticket=-1):
            groups = super().generate(caption_indices, version, positions, ticket)
            for group in groups:
                group.rewards[:] = float("nan")
            return groups

    run_dir = tmp_path / "run"
    cfg = load_config(REPO / "configs" / "smoke.yaml", [
        f"workdir={smoke_workdir}", f"data.root={smoke_workdir}/data", "faults.max_nonfinite_in_row=2",
        "log.final_eval=false"])
    assert Driver(cfg, run_dir, worker_cls=NaNRewardWorker).run() == 1
    records = list(read_metrics(run_dir / "metrics.jsonl"))
    assert not [r for r in records if r.get("event") == "step"]
    final = [r for r in records if r.get("event") == "pipeline"][-1]
    assert final["queue/dropped_nonfinite"] >= 2 * cfg.schedule.batch_size
    assert final["queue/consumed"] == 0 and final["queue/accounting_ok"]
    run = [r for r in records if r.get("event") == "run"][-1]
    assert run["state"] == "failed" and "reward was NaN/inf" in run["message"]
    assert "max_nonfinite_in_row" in run["message"]


def _train_worker_pids() -> list[int]:
    """PIDs of this test session's Ray Train worker processes: descendants of this process whose title Ray set to
    `ray::RayTrainWorker...` (other Ray sessions on the machine are left alone)."""

    def parent(pid: int) -> int:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])

    def descends_from_me(pid: int) -> bool:
        while pid > 1:
            if pid == os.getpid():
                return True
            pid = parent(pid)
        return False

    found = []
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and (proc / "cmdline").read_bytes().startswith(b"ray::RayTrainWorker") \
                    and descends_from_me(int(proc.name)):
                found.append(int(proc.name))
        except (OSError, ValueError):
            continue
    return found


@pytest.mark.parametrize(("kill_after", "interval"), [(5, 3), (2, 50)], ids=["after-checkpoints", "before-any"])
def test_killed_learner_worker_restarts_from_its_latest_checkpoint(ray_cluster, smoke_workdir, tmp_path, kill_after,
                                                                   interval):
    """SIGKILL the learner's process mid-run: Ray Train (FailureConfig) restarts the worker group from the latest
    checkpoint, so the steps go back by less than one checkpoint interval, and the run finishes every step. Killed
    before its first checkpoint, it starts over from step 0, and the weight store rolls back with it (the rollout
    workers must not keep sampling with the dead learner's newer weights). Checkpoints go to a storage URI
    (cluster.storage_path), as on a cluster."""
    class PacedWorker(RolloutWorker):
        """>= 0.5 s per rollout batch: the tiny learner cannot race through the run before the kill lands."""

        def generate(self, caption_indices, version, positions=None, ticket=-1):
            time.sleep(0.5)
            return super().generate(caption_indices, version, positions, ticket)

    run_dir = tmp_path / "run"
    cfg = load_config(REPO / "configs" / "smoke.yaml", [
        f"workdir={smoke_workdir}", f"data.root={smoke_workdir}/data", "schedule.total_steps=14",
        f"checkpoint.interval={interval}", "log.final_eval=false", f"cluster.storage_path=file://{tmp_path}/bucket"])
    killed: list[tuple[int, list[int]]] = []

    def kill_learner(finished: threading.Event) -> None:
        """Kill the learner's processes once step `kill_after` is reached, however long the run takes to get there."""
        while not finished.is_set():
            seen = logged_steps(run_dir)
            if max(seen, default=0) >= kill_after:
                pids = _train_worker_pids()
                for pid in pids:
                    os.kill(pid, signal.SIGKILL)
                killed.append((max(seen), pids))
                return
            time.sleep(0.2)

    with beside_the_run(kill_learner):
        assert Driver(cfg, run_dir, worker_cls=PacedWorker).run() == 0
    assert len(killed) == 1 and killed[0][1], "no Ray Train worker process was found to kill"
    seen_at_kill = killed[0][0]
    records = [r for r in read_metrics(run_dir / "metrics.jsonl") if r.get("event") == "step"]
    steps = [r["step"] for r in records]
    restart = next(i for i, r in enumerate(records) if r["health/learner_restarts"] == 1)
    assert all(r["health/learner_restarts"] == 1 for r in records[restart:])
    restored = steps[restart] - 1                                                    # the checkpoint it came back from
    assert restored >= seen_at_kill - cfg.checkpoint.interval               # back <= one checkpoint interval
    assert restored % cfg.checkpoint.interval == 0 and restored <= max(steps[:restart])
    assert steps[-1] == cfg.schedule.total_steps and sorted(set(steps)) == list(range(1, 15))
    assert all(r["version"] == r["step"] // cfg.schedule.sync_interval for r in records)
    assert records[-1]["health/learner_restarts"] == 1
    # Checkpoints went to cluster.storage_path (here a file:// URI, read through the same calls as s3://), one
    # folder per run, and the aligned policy was read back from there.
    newest = RunStorage(f"file://{tmp_path}/bucket/run").latest(LEARNER_FILE)
    assert newest is not None and newest.endswith("step_00000014")
    assert not list(run_dir.glob("learner-*")) and (run_dir / "policy.pt").is_file()
    final = [r for r in read_metrics(run_dir / "metrics.jsonl") if r.get("event") == "pipeline"][-1]
    dropped = sum(v for k, v in final.items() if k.startswith("queue/dropped_"))
    assert final["queue/accounting_ok"]
    assert final["queue/generated"] == final["queue/consumed"] + dropped + final["queue/size"]
