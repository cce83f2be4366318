"""Shared fixtures. Ray tests use one real local Ray cluster for the whole session (`ray_cluster`)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import pytest

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
# Ray Train's controller polls its learner group every this many seconds (Ray's default: 2). Each poll gates the
# group's start, a restart after a failure and the end of fit(), so a tiny run spent ~6 s of idle polling after its
# last step; 0.2 s leaves every behaviour as it is. Ray Train hands the variable to its controller from the process
# that builds the TorchTrainer (Driver runs here and in the subprocesses, which inherit os.environ).
os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.2")

REPO = Path(__file__).resolve().parents[1]
SHARED_SAMPLE = REPO.parent / "shared" / "data" / "humanml3d_sample"


@pytest.fixture(scope="session")
def humanml3d_sample() -> Path:
    """The real HumanML3D fixture folder beside the checkout; skips (loudly) only when ../shared is absent."""
    if not SHARED_SAMPLE.is_dir():
        pytest.skip(f"real HumanML3D sample not found at {SHARED_SAMPLE} (../shared is absent)")
    return SHARED_SAMPLE


@pytest.fixture(scope="session")
def ray_cluster():
    """One real local Ray for all Ray tests in the session (2 CPUs, no dashboard)."""
    import ray

    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"RAY_USAGE_STATS_ENABLED": "0"}})
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def separable_dataset():
    """(train, val) tiny MotionDatasets (256 and 64 motions, <= 40 frames) of 4 actions x 4 directions, each
    motion a noisy mix of an action pattern and a direction offset, with two captions naming both. Easy to learn
    in seconds: reward/evaluator tests check that training finds the text-motion link."""
    import numpy as np

    from sopo_ray.data.dataset import MotionDataset

    actions = ["walks", "jumps", "waves", "kicks"]
    directions = ["forward", "backward", "to the left", "to the right"]
    protos = np.random.default_rng(1234).normal(size=(8, 263)).astype(np.float32)

    def build(n: int, seed: int) -> MotionDataset:
        rng = np.random.default_rng(seed)
        lengths = rng.integers(20, 41, n).astype(np.int64)
        features = np.zeros((n, 40, 263), np.float32)
        captions = []
        for i in range(n):
            a, d = i % 4, (i // 4) % 4
            t = np.arange(lengths[i])[:, None]
            features[i, : lengths[i]] = (np.sin(t * (0.2 + 0.1 * a)) * protos[a] + protos[4 + d]
                                         + 0.3 * rng.normal(size=(lengths[i], 263)))
            captions.append([f"a person {actions[a]} {directions[d]}", f"someone {actions[a]} {directions[d]}"])
        valid = np.concatenate([f[:n_] for f, n_ in zip(features, lengths, strict=True)])
        return MotionDataset(motion_ids=[f"{seed}-{i}" for i in range(n)], features=features, lengths=lengths,
                             captions=captions, params=None, mean=valid.mean(0), std=valid.std(0) + 1e-3,
                             data_id="separable-test", skeleton="t2m")

    return build(256, 0), build(64, 1)


@pytest.fixture(scope="session")
def smoke_workdir(tmp_path_factory) -> Path:
    """Artifacts of configs/smoke.yaml (tiny dataset, base, reward, evaluator), built once per session.

    Tests point a smoke config at it with `--set workdir=<it> --set data.root=<it>/data`.
    """
    from sopo_ray import artifacts
    from sopo_ray.config import load_config

    workdir = tmp_path_factory.mktemp("smoke_artifacts")
    artifacts.resolve(load_config(REPO / "configs" / "smoke.yaml", [f"workdir={workdir}", f"data.root={workdir}/data"]))
    return workdir


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory):
    """A small synthetic dataset (40 motions, clips of 40-80 frames) built once per session; returns the
    DataConfig that points at it (pass it to `load_dataset(cfg, split)`)."""
    from sopo_ray.config import DataConfig
    from sopo_ray.data.synthetic.build import build_synthetic

    cfg = DataConfig(root=tmp_path_factory.mktemp("tiny_dataset") / "synthetic", size=40, max_frames=80,
                     build_workers=1)
    build_synthetic(cfg, progress=False)
    return cfg


@pytest.fixture(scope="session")
def simulated_cluster_child() -> Callable[..., dict]:
    """Run a Python script that builds its own `ray.cluster_utils.Cluster` in a fresh process (the session's
    in-process Ray already exists) with its own Ray temp dir; returns the JSON the script printed on a line
    `RESULT {...}`."""

    def run(script: str, *args: str, timeout: int = 900) -> dict:
        with tempfile.TemporaryDirectory(prefix="sopo-sim-", dir="/tmp") as ray_tmp:
            env = {**os.environ, "RAY_TMPDIR": ray_tmp, "RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0"}
            proc = subprocess.run([sys.executable, "-c", script, *args], capture_output=True, text=True,
                                  timeout=timeout, env=env, cwd=REPO)
        lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
        assert lines, "\n".join(dict.fromkeys(proc.stdout.splitlines()))[-4000:] + "\n--- stderr ---\n" + \
            "\n".join(dict.fromkeys(proc.stderr.splitlines()))[-3000:]
        return json.loads(lines[-1][len("RESULT "):])

    return run
