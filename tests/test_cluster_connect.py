"""Connecting to Ray and placing actors: fast clear errors, per-role options, resource checks, multi-node."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from sopo_ray.config import ClusterConfig, load_config
from sopo_ray.distributed.cluster import connect
from sopo_ray.distributed.placement import (
    actor_options,
    check_resources,
    resolve_use_gpu,
    rollout_capacity,
    train_resources_per_worker,
)
from sopo_ray.errors import ClusterError

REPO = Path(__file__).resolve().parents[1]


def _child_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env.update(RAY_USAGE_STATS_ENABLED="0", RAY_AUTH_MODE="disabled", PYTHONPATH=str(REPO), **extra)
    return env


def _free_loopback_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


CONNECT_ERRORS = """
import json, sys
from sopo_ray.config import ClusterConfig
from sopo_ray.distributed.cluster import connect
from sopo_ray.errors import ClusterError
out = {}
for name, address in json.loads(sys.argv[1]).items():
    try:
        connect(ClusterConfig(address=address, connect_timeout_s=2))
        out[name] = "connected"
    except ClusterError as exc:
        out[name] = str(exc)
print("RESULT " + json.dumps(out))
"""


def _result(proc: subprocess.CompletedProcess) -> dict:
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    assert proc.returncode == 0 and lines, f"rc={proc.returncode}\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}"
    return json.loads(lines[-1][len("RESULT "):])


def test_unreachable_address_fails_fast_with_a_fix():
    """Ray alone retries a dead address for minutes; connect answers in seconds. Runs in a fresh process
    because the session's Ray is already initialised here."""
    port = _free_loopback_port()
    cases = {"gcs": f"127.0.0.1:{port}", "client": f"ray://127.0.0.1:{port}", "dashboard": "http://127.0.0.1:8265",
             "bad_port": "127.0.0.1:sixty"}
    proc = subprocess.run([sys.executable, "-c", CONNECT_ERRORS, json.dumps(cases)], capture_output=True,
                          text=True, timeout=90, env=_child_env(), cwd=REPO)
    errors = _result(proc)
    for name in ("gcs", "client"):
        assert f"127.0.0.1:{port}" in errors[name] and "ray start --head" in errors[name]
        assert "\n" not in errors[name]
    assert "ray job submit --address" in errors["dashboard"]
    assert "bad port" in errors["bad_port"]


LOCAL_DASHBOARD = """
import json, socket
import ray
from sopo_ray.config import ClusterConfig
from sopo_ray.distributed.cluster import connect
info = connect(ClusterConfig(num_cpus=1, dashboard=True), namespace="sopo-test")
port = int(info["dashboard_url"].rsplit(":", 1)[1])
node_ip = ray.util.get_node_ip_address()
def reachable(host):
    try:
        with socket.create_connection((host, port), timeout=2):
            return True
    except OSError:
        return False
out = {"info": info, "node_ip": node_ip, "loopback": reachable("127.0.0.1"), "node": reachable(node_ip)}
ray.shutdown()
print("RESULT " + json.dumps(out))
"""


def test_local_ray_starts_with_dashboard_on_loopback_only():
    """A local Ray started by connect serves its dashboard on 127.0.0.1 and not on the machine's address."""
    with tempfile.TemporaryDirectory(prefix="sopo-lo-", dir="/tmp") as tmp:
        proc = subprocess.run([sys.executable, "-c", LOCAL_DASHBOARD], capture_output=True, text=True,
                              timeout=180, env=_child_env(RAY_TMPDIR=tmp), cwd=REPO)
    out = _result(proc)
    info = out["info"]
    assert info["started_local"] and info["num_cpus"] == 1.0 and info["namespace"] == "sopo-test"
    assert info["dashboard_url"].startswith("http://127.0.0.1:") and out["loopback"]
    if out["node_ip"] not in ("127.0.0.1", "localhost"):
        assert not out["node"], f"dashboard answers on {out['node_ip']}"


def test_actor_options_per_role():
    cfg = ClusterConfig(rollout_cpus=0.5, rollout_gpus=0.25, learner_cpus=2, learner_gpus=1,
                        rollout_resource="rollout", learner_resource="learner")
    assert actor_options(cfg, "rollout", use_gpu=True) == {"num_cpus": 0.5, "num_gpus": 0.25,
                                                           "resources": {"rollout": 1.0}}
    assert actor_options(cfg, "rollout", use_gpu=False) == {"num_cpus": 0.5, "num_gpus": 0.0,
                                                            "resources": {"rollout": 1.0}}
    assert actor_options(cfg, "learner", use_gpu=True) == {"num_cpus": 2.0, "num_gpus": 1.0,
                                                           "resources": {"learner": 1.0}}
    assert actor_options(cfg, "helper", use_gpu=True) == {"num_cpus": 0.0, "num_gpus": 0.0}
    assert train_resources_per_worker(cfg, use_gpu=True) == {"CPU": 2.0, "GPU": 1.0, "learner": 1.0}
    assert actor_options(ClusterConfig(), "rollout", use_gpu=False) == {"num_cpus": 1.0, "num_gpus": 0.0}
    with pytest.raises(ValueError, match="role"):
        actor_options(cfg, "critic", use_gpu=False)  # type: ignore[arg-type]


def test_connect_reuses_the_running_ray(ray_cluster):
    info = connect(ClusterConfig())
    assert info["num_nodes"] >= 1 and info["num_cpus"] == ray_cluster.cluster_resources()["CPU"]
    assert info["num_gpus"] == 0.0 and not info["started_local"]
    assert resolve_use_gpu(ClusterConfig(use_gpu="auto")) is False
    assert resolve_use_gpu(ClusterConfig(use_gpu=True)) is True


def test_helper_actors_start_while_cpus_are_taken(ray_cluster):
    """num_cpus=0 helpers must not wait for CPUs the learners and rollout actors hold."""

    @ray_cluster.remote
    class Holder:
        def ping(self) -> str:
            return "ok"

    free = ray_cluster.available_resources().get("CPU", 0.0)
    assert free > 0
    pieces = [1.0] * int(free) + ([round(free - int(free), 4)] if free > int(free) else [])
    hogs = [Holder.options(**actor_options(ClusterConfig(rollout_cpus=cpus), "rollout", use_gpu=False)).remote()
            for cpus in pieces]
    try:
        assert ray_cluster.get([hog.ping.remote() for hog in hogs], timeout=60) == ["ok"] * len(hogs)
        assert ray_cluster.available_resources().get("CPU", 0.0) < 1e-6
        helper = Holder.options(**actor_options(ClusterConfig(), "helper", use_gpu=False)).remote()
        assert ray_cluster.get(helper.ping.remote(), timeout=60) == "ok"
        ray_cluster.kill(helper)
    finally:
        for hog in hogs:
            ray_cluster.kill(hog)


def test_more_gpus_than_exist_is_refused(ray_cluster):
    cpus = int(ray_cluster.cluster_resources()["CPU"])
    with pytest.raises(ClusterError, match=r"asks for 1 GPUs .* the Ray cluster has 0; .*cluster.use_gpu=false"):
        check_resources(load_config(None, ["cluster.use_gpu=true"]))
    with pytest.raises(ClusterError, match="asks for 3 GPUs"):
        check_resources(load_config(None, ["cluster.use_gpu=true", "cluster.rollout_gpus=1",
                                           "cluster.num_rollout_workers=2"]))
    with pytest.raises(ClusterError, match=r"rollout workers do not fit .* CPU"):
        check_resources(load_config(None, ["cluster.use_gpu=false", f"cluster.num_rollout_workers={cpus + 1}"]))
    with pytest.raises(ClusterError, match="no node advertises it"):
        check_resources(load_config(None, ["cluster.use_gpu=false", "cluster.rollout_resource=rollout"]))
    plan = check_resources(load_config(None, ["cluster.use_gpu=false", "cluster.rollout_cpus=0.5"]))
    assert plan["rollout_capacity"] == 1 and plan["gpus_requested"] == 0
    assert rollout_capacity(ClusterConfig(rollout_cpus=0.5), False, num_learners=1) == (cpus - 1) * 2
    autoscaled = check_resources(load_config(None, ["cluster.use_gpu=true", "cluster.autoscale=true"]))
    assert autoscaled["gpus_requested"] == 1 and autoscaled["rollout_capacity"] == cpus


@pytest.mark.slow
def test_simulated_multinode_places_rollout_actors_on_rollout_nodes():
    """Three Ray nodes on this machine: join by address, check the plan, place actors, grow and shrink."""
    with tempfile.TemporaryDirectory(prefix="sopo-mn-", dir="/tmp") as tmp:
        proc = subprocess.run([sys.executable, str(REPO / "tests" / "cluster_scripts" / "simulate_multinode.py")],
                              capture_output=True, text=True, timeout=300, env=_child_env(RAY_TMPDIR=tmp), cwd=REPO)
    out = _result(proc)
    workers = out["worker_nodes"]
    assert out["connect"]["num_nodes"] == 3 and out["connect"]["resources"]["rollout"] == 2
    assert out["plan"]["rollout_capacity"] == 2
    assert "rollout workers do not fit" in out["over_request"]
    assert sorted(out["placed"]) == sorted(workers) and out["head_node"] not in out["placed"]
    assert out["third_pending_before_new_node"]
    assert out["capacity_after_add"] == 3 and out["third_placed"] == out["extra_node"]
    assert len(out["requested"]) == 5 and sum(b.get("rollout", 0) for b in out["requested"]) == 4
    assert out["plan_autoscale_over"]["rollout_capacity"] == 3
    assert out["capacity_after_remove"] == 2
