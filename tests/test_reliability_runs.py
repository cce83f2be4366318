"""Reliability of the run itself (issue 18): a metrics file cut mid-line, an interrupted dataset build, learner
restarts Ray Train reports, a second Ray on the same machine, and Ctrl-C during a rollout that never ends followed
by a resume past a corrupt newest checkpoint. Bad inputs refused up front are in tests/test_reliability_inputs.py.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from pathlib import Path

import pytest

from sopo_ray.config import DataConfig, load_config
from sopo_ray.tracking import MetricsWriter, read_metrics

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("text,kept,dropped", [
    ('{"step": 1}\n{"step": 2, "loss', ['{"step": 1}'], '{"step": 2, "loss'),   # cut mid-record: dropped
    ('{"step": 1}\n{"step": 2}', ['{"step": 1}', '{"step": 2}'], ""),           # only the newline lost: kept
    ('{"st', [], '{"st'),
    ('{"step": 1}\n', ['{"step": 1}'], ""),
])
def test_metrics_writer_never_appends_to_a_cut_off_line(tmp_path, text, kept, dropped):
    path = tmp_path / "metrics.jsonl"
    path.write_text(text)
    writer = MetricsWriter(path)
    writer.log(3, event="step")
    writer.close()
    lines = path.read_text().splitlines()
    assert writer.dropped_tail == dropped
    assert lines[:-1] == kept and json.loads(lines[-1])["step"] == 3
    assert [r["step"] for r in read_metrics(path)] == [json.loads(line)["step"] for line in lines]


def test_an_interrupted_dataset_build_leaves_no_half_written_folder(tmp_path, monkeypatch):
    """Ctrl-C (or any error) while the build writes its splits removes the hidden staging folder."""
    from sopo_ray.data.synthetic import build as synthetic

    calls = []

    def write_then_interrupt(*args, **kwargs):
        calls.append(args[0])
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real_write(*args, **kwargs)

    real_write = synthetic.write_split
    monkeypatch.setattr(synthetic, "write_split", write_then_interrupt)
    cfg = DataConfig(root=tmp_path / "data" / "ds", size=12, min_frames=16, max_frames=32, build_workers=1)
    with pytest.raises(KeyboardInterrupt):
        synthetic.build_synthetic(cfg, progress=False)
    assert len(calls) == 2 and calls[0].parent.name.startswith(".ds.building-")
    assert list((tmp_path / "data").iterdir()) == []


@pytest.mark.ray
def test_every_learner_failure_ray_train_reports_counts_as_a_restart(ray_cluster):
    """A learner group that fails before its learners register still counts: the restarted learners report 1."""
    from sopo_ray.distributed.control import RunControl
    from sopo_ray.distributed.learner_group import CountLearnerFailures

    control = ray_cluster.remote(RunControl).options(num_cpus=0).remote(0.5, 8)
    failures = CountLearnerFailures(control)
    failures.after_exception(None, {0: RuntimeError("the placement group was removed")})   # before any start
    # The callback does not wait (it runs in Train's controller) and RunControl is an async actor, which may run
    # calls out of order: wait until the failure is recorded, as it is long before Train restarts the group.
    deadline = time.monotonic() + 30
    while ray_cluster.get(control.status.remote())["learner_restarts"] != 1 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert ray_cluster.get(control.learner_started.remote(0)) == 1
    assert ray_cluster.get(control.learner_started.remote(0)) == 1    # a start without a reported failure: the same
    assert ray_cluster.get(control.learner_started.remote(0)) == 2    # ... until it is the third start of the rank
    failures.after_exception(None, {0: RuntimeError("SIGKILL")})
    assert ray_cluster.get(control.status.remote())["learner_restarts"] == 2
    ray_cluster.kill(control)


OTHER_RAY = """
import sys, ray
ray.init(address="local", num_cpus=1, include_dashboard=False)
print("READY", ray.get_runtime_context().gcs_address, flush=True)
sys.stdin.read()
"""

OWN_RAY = """
import json, subprocess, sys
other = subprocess.Popen([sys.executable, "-c", sys.argv[1]], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
other_address = other.stdout.readline().split()[1]
import ray
from ray._private import services
from sopo_ray.config import ClusterConfig
from sopo_ray.distributed import cluster

info = cluster.connect(ClusterConfig(num_cpus=1, dashboard=False))

@ray.remote(num_cpus=0)
def looked_up():
    # What Ray Train's placement-group cleaner and state actor do to find "the" cluster (the state API, no address)
    import os
    try:
        return os.environ.get("RAY_ADDRESS"), services.canonicalize_bootstrap_address_or_die(None)
    except ConnectionError as exc:
        return os.environ.get("RAY_ADDRESS"), str(exc)

env, found = ray.get(looked_up.remote())
ray.shutdown()
other.stdin.close()
other.wait(timeout=60)
print("RESULT " + json.dumps({"ours": info["address"], "other": other_address, "env": env, "found": found}))
"""


@pytest.mark.slow
def test_processes_of_a_started_ray_find_it_while_another_ray_runs(simulated_cluster_child):
    """With a second Ray on the machine, Ray's own lookup inside the run's processes (without the fix: "Found
    multiple active Ray instances", or the other cluster) finds the Ray the run started."""
    result = simulated_cluster_child(OWN_RAY, OTHER_RAY, timeout=300)
    assert result["ours"] != result["other"]
    assert result["env"] == result["ours"] and result["found"] == result["ours"], result


def _records(run_dir: Path, event: str) -> list[dict]:
    return [r for r in read_metrics(run_dir / "metrics.jsonl") if r.get("event") == event]


@pytest.mark.ray
@pytest.mark.slow
def test_ctrl_c_in_an_endless_rollout_stops_promptly_and_resume_skips_a_corrupt_checkpoint(
        ray_cluster, smoke_workdir, tmp_path):
    from sopo_ray.checkpoint import load_checkpoint
    from sopo_ray.distributed.driver import Driver
    from sopo_ray.distributed.learner import LEARNER_FILE
    from sopo_ray.distributed.rollout import RolloutWorker
    from sopo_ray.distributed.storage import RunStorage

    class EndlessWorker(RolloutWorker):
        """Serves three rollout batches, then sits in the next for an hour (a rollout that takes minutes)."""

        def generate(self, caption_indices, version, positions=None, ticket=-1):
            self.served = getattr(self, "served", 0) + 1
            if self.served > 3:
                time.sleep(3600)
            return super().generate(caption_indices, version, positions, ticket)

    run_dir = tmp_path / "run"
    cfg = load_config(REPO / "configs" / "smoke.yaml",
                      [f"workdir={smoke_workdir}", f"data.root={smoke_workdir}/data", "schedule.total_steps=8",
                       "checkpoint.interval=1", "log.final_eval=false", "log.live_view=false"])
    stopped_at: list[float] = []

    def ctrl_c_once_stalled() -> None:
        deadline = time.time() + 300
        while time.time() < deadline:
            if (run_dir / "metrics.jsonl").is_file() and len(_records(run_dir, "step")) >= 2:
                time.sleep(2.0)   # the learner now waits for the batch that never comes
                stopped_at.append(time.time())
                os.kill(os.getpid(), signal.SIGINT)
                return
            time.sleep(0.2)

    threading.Thread(target=ctrl_c_once_stalled, daemon=True).start()
    assert Driver(cfg, run_dir, worker_cls=EndlessWorker).run() == 128 + signal.SIGINT
    # Without the stop grace the driver waited faults.sync_timeout_s (120 s) for the endless batch.
    assert stopped_at and time.time() - stopped_at[0] < 60
    points = RunStorage(run_dir).checkpoints(LEARNER_FILE)
    reached = _records(run_dir, "step")[-1]["step"]
    assert len(points) == 2 and points[-1][0] == reached >= 2, points   # every step checkpointed, the newest two kept

    newest = Path(points[-1][1]) / LEARNER_FILE
    newest.write_bytes(newest.read_bytes()[: newest.stat().st_size // 2])   # cut off, as by a crash mid-copy
    with open(run_dir / "metrics.jsonl", "a") as fh:
        fh.write('{"step": 2, "event": "pipel')                                # a line cut off mid-write
    assert Driver(load_config(run_dir / "config.yaml"), run_dir, resume=True).run() == 0

    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    assert all(json.loads(line) for line in lines)                              # nothing appended to the cut line
    resume = _records(run_dir, "resume")[-1]
    assert resume["checkpoint"] == points[0][1] and resume["step"] == reached - 1   # the complete one before it
    assert resume["skipped"][0].startswith(str(newest)) and resume["dropped_metrics_tail"]
    steps = [r["step"] for r in _records(run_dir, "step")]
    assert steps[-(9 - reached):] == list(range(reached, 9))                    # redone from the older checkpoint
    assert load_checkpoint(run_dir / "policy.pt", "mdm")["step"] == 8
