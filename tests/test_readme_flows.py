"""The README's stop-and-resume flow exactly as a user types it: from the repository root, relative paths, a shipped
config, Ctrl-C, then the `--resume` command the run printed."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from sopo_ray.tracking import read_metrics

REPO = Path(__file__).resolve().parents[1]
pytestmark = [pytest.mark.slow]


def checkout_with_smoke_artifacts(root: Path, smoke_workdir: Path) -> None:
    """`root` laid out like a checkout whose smoke artifacts are built: configs/ and artifacts/smoke/."""
    shutil.copytree(REPO / "configs", root / "configs")
    shutil.copytree(smoke_workdir, root / "artifacts" / "smoke")


def step_count(root: Path) -> int:
    runs = list((root / "runs").glob("*/metrics.jsonl"))
    if not runs:
        return 0
    return sum(1 for r in read_metrics(runs[0]) if r.get("event") == "step")


def test_ctrl_c_then_the_printed_resume_command_continues_the_run(smoke_workdir, tmp_path):
    checkout_with_smoke_artifacts(tmp_path, smoke_workdir)
    with tempfile.TemporaryDirectory(prefix="sopo-readme-", dir="/tmp") as ray_tmp:
        env = {**os.environ, "RAY_TMPDIR": ray_tmp, "RAY_USAGE_STATS_ENABLED": "0"}
        first = subprocess.Popen(
            [sys.executable, "-m", "sopo_ray.run", "--config", "configs/smoke.yaml",
             "--set", "schedule.total_steps=30", "--set", "checkpoint.interval=3"],
            cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        deadline = time.time() + 300
        while step_count(tmp_path) < 4 and first.poll() is None and time.time() < deadline:
            time.sleep(0.2)
        first.send_signal(signal.SIGINT)                                  # Ctrl-C
        out, _ = first.communicate(timeout=300)
        assert first.returncode == 128 + signal.SIGINT, out[-3000:]
        printed = re.search(r"^\s*(python -m sopo_ray\.run --resume \S+)\s*$", out, re.MULTILINE)
        assert printed, out[-3000:]
        command = shlex.split(printed.group(1))
        assert not Path(command[-1]).is_absolute()                        # the relative run dir, as typed
        stopped_at = step_count(tmp_path)
        assert 4 <= stopped_at < 30

        resumed = subprocess.run([sys.executable, *command[1:]], cwd=tmp_path, env=env, capture_output=True,
                                 text=True, timeout=900)
    assert resumed.returncode == 0, (resumed.stdout + resumed.stderr)[-3000:]
    assert "resuming from" in resumed.stdout
    run_dir = tmp_path / command[-1]
    steps = [r["step"] for r in read_metrics(run_dir / "metrics.jsonl") if r.get("event") == "step"]
    assert steps == list(range(1, 31))                                   # continued, nothing repeated or skipped
    assert (run_dir / "policy.pt").is_file() and (run_dir / "report.md").is_file()
