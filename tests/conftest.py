"""Shared fixtures. Ray tests use one real local Ray cluster for the whole session (`ray_cluster`)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

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

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"RAY_USAGE_STATS_ENABLED": "0"}})
    yield ray
    ray.shutdown()
