"""Joining or starting Ray, and what `ray job submit` uploads (where each actor runs: `placement.py`).

- `connect` starts a local Ray (laptop) or joins `cluster.address` (`auto` inside `ray job submit`), failing in
  seconds with a one-line `ClusterError` when the address does not answer (Ray itself retries for minutes).
  Every process of the run gets RAY_ADDRESS naming that cluster, so Ray code that looks a cluster up on its own
  never picks another Ray running on the same machine.
- `job_runtime_env` is the `--runtime-env-json` for `ray job submit`: code only, never data or run outputs.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import os
import socket
from typing import Any
from urllib.parse import urlsplit

import ray
from ray.exceptions import AuthenticationError

from sopo_ray.config import ClusterConfig
from sopo_ray.distributed.ray_logs import quiet_token_auth_notice
from sopo_ray.errors import ClusterError

logger = logging.getLogger(__name__)

DEFAULT_GCS_PORT = 6379
DEFAULT_CLIENT_PORT = 10001
GCS_PORT_ENV = "RAY_GCS_SERVER_PORT"
"""Read by Ray when it starts a head node: the GCS port (0 or unset: any free one)."""

# Paths `ray job submit --working-dir .` must not upload: environments, data, caches and run outputs.
# Gitignore syntax: a leading `/` anchors at the working dir, so the package's own `sopo_ray/data/` still ships.
# Ray also honours .gitignore and .rayignore in the working dir; these hold even where those files differ.
JOB_EXCLUDES = [
    "/.git/",
    "/.venv/",
    "/venv/",
    "__pycache__/",
    "*.pyc",
    ".pytest_cache/",
    ".ruff_cache/",
    "*.egg-info/",
    "/build/",
    "/dist/",
    "/artifacts/",
    "/runs/",
    "/data/",
    "/outputs/",
    "/ray_results/",
]

# Nothing downloads weights at run time (the text encoder ships in a package).
OFFLINE_ENV = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}


# ---------------------------------------------------------------------------------------------------------
# Connecting
# ---------------------------------------------------------------------------------------------------------


def _split_host_port(address: str) -> tuple[str, int]:
    """host:port of a GCS (`host:6379`) or Ray client (`ray://host:10001`) address, default ports filled in."""
    if address.startswith("ray://"):
        parts = urlsplit(address)
        if not parts.hostname:
            raise ClusterError(f"cluster.address '{address}' has no host; use ray://HOST:10001")
        return parts.hostname, parts.port or DEFAULT_CLIENT_PORT
    host, sep, port = address.rpartition(":")
    if not sep:
        return address, DEFAULT_GCS_PORT
    if not port.isdigit():
        raise ClusterError(f"cluster.address '{address}' has a bad port; use HOST:6379, ray://HOST:10001 or auto")
    return host.strip("[]"), int(port)


def _probe(address: str, host: str, port: int, timeout_s: float) -> None:
    """Open and close a TCP connection, so a dead address fails in seconds instead of Ray's minutes of retries."""
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            return
    except OSError as exc:
        reason = "timed out" if isinstance(exc, TimeoutError) else (exc.strerror or type(exc).__name__)
        raise ClusterError(
            f"no Ray cluster answers at {address} ({host}:{port}: {reason} after <= {timeout_s:g} s); start one with "
            f"`ray start --head` or `ray up cluster/gpu.yaml`, fix cluster.address, or unset it to run locally"
        ) from None


def _join_target(address: str | None) -> str | None:
    """What `connect` joins: `cluster.address`, else RAY_ADDRESS (set inside `ray job submit`); None: start locally.

    `auto` resolves through RAY_ADDRESS like Ray does; left as `auto`, Ray finds the cluster `ray start` made here.
    """
    env = os.environ.get("RAY_ADDRESS", "").strip()
    if address in (None, ""):
        return env or None
    if address == "auto":
        return env or "auto"
    return None if address == "local" else address


def joins_cluster(cluster_cfg: ClusterConfig) -> bool:
    """Whether `connect` will join a running cluster (else it starts a local Ray, or reuses this process's)."""
    return not ray.is_initialized() and _join_target(cluster_cfg.address) is not None


def largest_node_memory() -> int:
    """Bytes of memory (Ray's task memory plus its object store) of the connected cluster's largest alive node."""
    return int(max((n["Resources"].get("memory", 0) + n["Resources"].get("object_store_memory", 0)
                    for n in ray.nodes() if n.get("Alive")), default=0))


def _summary(started_local: bool, dashboard_url: str | None) -> dict[str, Any]:
    resources = ray.cluster_resources()
    nodes = [n for n in ray.nodes() if n.get("Alive")]
    context = ray.get_runtime_context()
    return {
        "address": context.gcs_address,
        "namespace": context.namespace,
        "started_local": started_local,
        "dashboard_url": dashboard_url,
        "num_nodes": len(nodes),
        "num_cpus": float(resources.get("CPU", 0.0)),
        "num_gpus": float(resources.get("GPU", 0.0)),
        "resources": dict(resources),
    }


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("", 0))
        return sock.getsockname()[1]


def _start_local(cluster_cfg: ClusterConfig, namespace: str | None, logging_level: int) -> Any:
    """`ray.init(address="local")` on a GCS port chosen here, with RAY_ADDRESS naming that GCS in the environment
    of every process of the run.

    Ray code that looks a cluster up by itself (Ray Train's placement-group cleaner and state actor ask the state
    API with no address) otherwise picks "the" Ray of this machine: with a second Ray running it fails with "Found
    multiple active Ray instances", or, after a `ray start` elsewhere on the host, it asks that cluster, finds no
    Train controller there and removes the healthy learners' placement group.
    """
    port = int(os.environ.get(GCS_PORT_ENV) or 0) or _free_port()
    address = f"{ray.util.get_node_ip_address()}:{port}"
    previous = os.environ.get(GCS_PORT_ENV)
    os.environ[GCS_PORT_ENV] = str(port)
    try:
        return ray.init(
            address="local",
            num_cpus=cluster_cfg.num_cpus,
            include_dashboard=cluster_cfg.dashboard,
            dashboard_host=cluster_cfg.dashboard_host,
            namespace=namespace,
            runtime_env={"env_vars": {**OFFLINE_ENV, "RAY_ADDRESS": address}},
            logging_level=logging_level,
        )
    finally:
        if previous is None:
            os.environ.pop(GCS_PORT_ENV, None)
        else:
            os.environ[GCS_PORT_ENV] = previous


def connect(cluster_cfg: ClusterConfig, *, namespace: str | None = None,
            logging_level: int = logging.INFO) -> dict[str, Any]:
    """Start a local Ray or join a cluster; return a summary (address, nodes, CPUs, GPUs, dashboard URL).

    Joins `cluster_cfg.address` (`auto`: the cluster of `ray job submit` or of `ray start` here), else RAY_ADDRESS
    when set, else starts a fresh local Ray with `num_cpus` and the dashboard on `dashboard_host`.
    An already initialised Ray in this process (a notebook, the test fixture, a second call) is reused as is.
    Unreachable addresses raise `ClusterError` within `cluster_cfg.connect_timeout_s`. `logging_level` is the
    driver's own Ray logger's (the trainer passes WARNING unless log.verbose; above INFO, Ray's notice that it
    enabled token authentication is not printed either).
    """
    if ray.is_initialized():
        return _summary(started_local=False, dashboard_url=None)
    if logging_level > logging.INFO:
        quiet_token_auth_notice()
    target = _join_target(cluster_cfg.address)
    if target is None:
        if cluster_cfg.dashboard and not _is_loopback(cluster_cfg.dashboard_host):
            logger.warning("Ray dashboard binds %s: anyone who can reach this port controls the cluster; prefer "
                           "127.0.0.1 and an SSH tunnel (docs/cluster.md)", cluster_cfg.dashboard_host)
        context = _start_local(cluster_cfg, namespace, logging_level)
        url = context.dashboard_url or None
        return _summary(started_local=True, dashboard_url=f"http://{url}" if url else None)
    if target.startswith(("http://", "https://")):
        raise ClusterError(
            f"Ray address '{target}' is the dashboard/job-submission URL; pass it to `ray job submit --address`, "
            f"and set cluster.address (or RAY_ADDRESS) to auto inside the job or to HOST:6379"
        )
    runtime_env = None
    if target != "auto":
        host, port = _split_host_port(target)
        _probe(target, host, port, cluster_cfg.connect_timeout_s)
        if not target.startswith("ray://") and not os.environ.get("RAY_JOB_ID"):
            # As for a local Ray (`_start_local`): the run's processes look up exactly this cluster.
            gcs = f"{ray.util.get_node_ip_address() if _is_loopback(host) else host}:{port}"
            runtime_env = {"env_vars": {"RAY_ADDRESS": gcs}}
    try:
        ray.init(address=target, namespace=namespace, runtime_env=runtime_env, logging_level=logging_level)
    except AuthenticationError:
        raise ClusterError(
            f"the Ray cluster at {target} uses token authentication and this machine has no (or another) token; "
            f"copy the cluster's ~/.ray/auth_token here (or set RAY_AUTH_TOKEN) and keep RAY_AUTH_MODE=token"
        ) from None
    except (ConnectionError, RuntimeError, ValueError) as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise ClusterError(
            f"could not join Ray at {target}: {first}; start a cluster (`ray start --head`), set RAY_AUTH_MODE=token "
            f"if it uses token auth, or unset cluster.address to run locally"
        ) from None
    return _summary(started_local=False, dashboard_url=None)


# ---------------------------------------------------------------------------------------------------------
# Job submission
# ---------------------------------------------------------------------------------------------------------


def job_runtime_env() -> dict[str, Any]:
    """`ray job submit --runtime-env-json` value: upload the code (not data, checkpoints or runs), stay offline."""
    return {"excludes": list(JOB_EXCLUDES), "env_vars": dict(OFFLINE_ENV)}


if __name__ == "__main__":
    print(json.dumps(job_runtime_env()))
