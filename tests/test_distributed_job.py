"""`ray job submit ... -- python -m sopo_ray.run --config configs/smoke.yaml` against a throwaway local head.

The head runs as `ray start --head --block` in its own temp dir (authentication off, loopback only) and is stopped
by terminating that process, which shuts down exactly the processes it started (never `ray stop`, which would
end every Ray cluster of the user on the machine).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest

from sopo_ray.distributed.cluster import job_runtime_env
from sopo_ray.tracking import read_metrics

REPO = Path(__file__).resolve().parents[1]
RAY = Path(sys.executable).with_name("ray")
pytestmark = [pytest.mark.slow]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def local_head():
    """A 2-CPU head with a dashboard on 127.0.0.1; yields the job-submission URL."""
    temp = tempfile.mkdtemp(prefix="rh", dir="/tmp")            # short: Ray's unix sockets live under it
    port, dash, agent = free_port(), free_port(), free_port()
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0",
           "RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S": "2"}
    log = open(Path(temp) / "head.log", "w")  # noqa: SIM115 - closed below
    head = subprocess.Popen([str(RAY), "start", "--head", f"--port={port}", f"--dashboard-port={dash}",
                             "--num-cpus=2", "--dashboard-host=127.0.0.1", "--include-dashboard=true",
                             # the job agent must not collide with another Ray on this machine (default 52365)
                             f"--dashboard-agent-listen-port={agent}",
                             f"--temp-dir={temp}", "--block"], stdout=log, stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{dash}"
    try:
        deadline = time.time() + 120
        while True:
            try:
                urllib.request.urlopen(f"{url}/api/version", timeout=2).read()
                break
            except OSError:
                if time.time() > deadline or head.poll() is not None:
                    raise RuntimeError(f"the test head did not come up; see {temp}/head.log") from None
                time.sleep(1)
        yield url
    finally:
        head.send_signal(signal.SIGTERM)
        try:
            head.wait(timeout=60)
        except subprocess.TimeoutExpired:
            head.kill()
        log.close()


def test_ray_job_submit_runs_the_smoke_config(local_head, smoke_workdir, tmp_path):
    run_dir = tmp_path / "run"
    env = {**os.environ, "RAY_AUTH_MODE": "disabled"}
    cmd = [str(RAY), "job", "submit", "--address", local_head, "--working-dir", str(REPO),
           "--runtime-env-json", json.dumps(job_runtime_env()), "--",
           sys.executable, "-m", "sopo_ray.run", "--config", "configs/smoke.yaml",
           "--set", f"workdir={smoke_workdir}", "--set", f"data.root={smoke_workdir}/data",
           "--set", "log.final_eval=false", "--output-dir", str(run_dir)]
    deadline = time.time() + 120
    while True:  # the head answers HTTP before its job agent is up: Ray asks to retry in that window
        out = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
        log = out.stdout + out.stderr
        if "No available agent to submit job" not in log or time.time() > deadline:
            break
        time.sleep(3)
    assert out.returncode == 0 and "succeeded" in log, log[-3000:]
    steps = [r["step"] for r in read_metrics(run_dir / "metrics.jsonl") if r.get("event") == "step"]
    assert steps == list(range(1, 7))
    assert list(run_dir.glob("learner-1/step_*/learner.pt"))
    assert (run_dir / "policy.pt").is_file()
