"""`sopo pretrain` and `sopo generate` end to end through the real CLI, on a tiny synthetic dataset."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from sopo_ray.cli import main

TINY = ["data.size=48", "data.min_frames=16", "data.max_frames=32", "data.captions_per_motion=2",
        "model.latent_dim=32", "model.num_layers=1", "model.num_heads=2", "model.ff_dim=64",
        "diffusion.num_timesteps=10", "diffusion.sample_steps=3", "pretrain.steps=8", "pretrain.batch_size=8",
        "pretrain.warmup_steps=2", "pretrain.log_every=4", "pretrain.checkpoint_every=4", "torch_threads=1"]


def sopo(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "sopo_ray.cli", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=600)


def test_pretrain_then_generate(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    overrides = [x for item in [*TINY, f"workdir={tmp_path}", f"data.root={tmp_path / 'data'}"]
                 for x in ("--set", item)]
    done = sopo("pretrain", *overrides, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    base = tmp_path / "base" / "mdm" / "base.pt"
    assert done.stdout.strip().endswith(str(base)) and base.is_file()

    out = sopo("generate", "a person walks forward", "a person waves", "--num", "2", "--length", "20",
               "--out", str(tmp_path / "walk.npy"), *overrides, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    motions = [np.load(tmp_path / f"walk_{i}.npy") for i in range(4)]
    assert all(m.shape == (20, 263) and np.isfinite(m).all() for m in motions)
    assert not np.allclose(motions[0], motions[1])

    # The other outputs in-process (same code path, without paying the start-up again).
    assert main(["generate", "a person waves", "--joints", "--out", str(tmp_path / "j.npy"), *overrides]) == 0
    assert np.load(tmp_path / "j.npy").shape[1:] == (22, 3)
    assert main(["generate", "a person waves", "--length", "16", "--out", str(tmp_path / "wave.gif"),
                 *overrides]) == 0
    assert (tmp_path / "wave.gif").read_bytes()[:3] == b"GIF"
    assert main(["generate", "x", "--checkpoint", str(tmp_path / "nope.pt"), "--out", "x.npy"]) == 2
    assert "error: no generator checkpoint" in capsys.readouterr().err
