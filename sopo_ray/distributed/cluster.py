"""Joining or starting Ray, and where each kind of actor runs.

One place decides how the trainer meets a cluster:

- `connect` starts a local Ray (laptop) or joins `cluster.address` (`auto` inside `ray job submit`), failing in
  seconds with a one-line `ClusterError` when the address does not answer (Ray itself retries for minutes).
  Every process of the run gets RAY_ADDRESS naming that cluster, so Ray code that looks a cluster up on its own
  never picks another Ray running on the same machine.
- `actor_options` / `train_resources_per_worker` turn the cluster section into `.options(**...)` for rollout and
  helper actors and into Ray Train's `resources_per_worker` for learners. A node hosts rollout actors when it
  advertises the custom resource `cluster.rollout_resource` (one unit per actor, so `{"rollout": 4}` means four
  rollout actors), learners likewise with `cluster.learner_resource`.
- `check_resources` refuses a plan the cluster cannot hold (more GPUs than exist, a custom resource no node has)
  instead of letting actors wait forever; with `cluster.autoscale` the missing nodes are asked for with
  `request_rollout_resources` and `rollout_capacity` says how many rollout actors fit as nodes arrive.
- `job_runtime_env` is the `--runtime-env-json` for `ray job submit`: code only, never data or run outputs.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import math
import os
import socket
from typing import Any, Literal
from urllib.parse import urlsplit

import ray
from ray.exceptions import AuthenticationError

from sopo_ray.config import ClusterConfig, Config
from sopo_ray.errors import ClusterError

logger = logging.getLogger(__name__)

Role = Literal["rollout", "learner", "helper"]

DEFAULT_GCS_PORT = 6379
DEFAULT_CLIENT_PORT = 10001
GCS_PORT_ENV = "RAY_GCS_SERVER_PORT"
"""Read by Ray when it starts a head node: the GCS port (0 or unset: any free one)."""
_EPS = 1e-9

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
    driver's own Ray logger's (the trainer passes WARNING unless log.verbose).
    """
    if ray.is_initialized():
        return _summary(started_local=False, dashboard_url=None)
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
# Placement
# ---------------------------------------------------------------------------------------------------------


def resolve_use_gpu(cluster_cfg: ClusterConfig) -> bool:
    """`cluster.use_gpu` as a bool; `auto` means the connected cluster has a GPU now (this machine, if not connected).

    On an autoscaling cluster whose GPU nodes start at zero, `auto` sees no GPU: set use_gpu: true there.
    """
    if isinstance(cluster_cfg.use_gpu, bool):
        return cluster_cfg.use_gpu
    if ray.is_initialized():
        return ray.cluster_resources().get("GPU", 0.0) > 0
    import torch

    return torch.cuda.is_available()


def _bundle(cluster_cfg: ClusterConfig, role: Role, use_gpu: bool) -> dict[str, float]:
    """Resources one actor of `role` reserves, in Ray's bundle form ({"CPU": .., "GPU": .., custom: 1})."""
    if role == "helper":
        return {}
    if role == "rollout":
        bundle = {"CPU": cluster_cfg.rollout_cpus, "GPU": cluster_cfg.rollout_gpus if use_gpu else 0.0}
        custom = cluster_cfg.rollout_resource
    elif role == "learner":
        bundle = {"CPU": cluster_cfg.learner_cpus, "GPU": cluster_cfg.learner_gpus if use_gpu else 0.0}
        custom = cluster_cfg.learner_resource
    else:
        raise ValueError(f"unknown actor role {role!r}; expected rollout, learner or helper")
    if custom:
        bundle[custom] = 1.0
    return {k: v for k, v in bundle.items() if v > 0}


def actor_options(cluster_cfg: ClusterConfig, role: Role, use_gpu: bool) -> dict[str, Any]:
    """Keyword arguments for `ActorClass.options(**...)` of a rollout, learner or helper actor.

    Helper actors (replay queue, weight store, counters) mostly wait, so they reserve nothing (`num_cpus=0`):
    otherwise they take the CPUs that learners need and Ray Train waits for resources forever.
    """
    bundle = _bundle(cluster_cfg, role, use_gpu)
    options: dict[str, Any] = {"num_cpus": bundle.pop("CPU", 0.0), "num_gpus": bundle.pop("GPU", 0.0)}
    if bundle:
        options["resources"] = bundle
    return options


def train_resources_per_worker(cluster_cfg: ClusterConfig, use_gpu: bool) -> dict[str, float]:
    """Ray Train `ScalingConfig(resources_per_worker=..., use_gpu=use_gpu)` for one learner worker."""
    return _bundle(cluster_cfg, "learner", use_gpu)


def _alive_node_resources() -> list[dict[str, float]]:
    return [dict(n.get("Resources", {})) for n in ray.nodes() if n.get("Alive")]


def _place(nodes: list[dict[str, float]], bundle: dict[str, float], count: int) -> int:
    """First-fit `count` copies of `bundle` onto `nodes` (mutated: capacity is used up); returns how many fit."""
    placed = 0
    for node in nodes:
        while placed < count:
            if all(node.get(k, 0.0) + _EPS >= v for k, v in bundle.items()):
                for k, v in bundle.items():
                    node[k] = node.get(k, 0.0) - v
                placed += 1
            else:
                break
        if placed == count:
            break
    return placed


def _place_learners(nodes: list[dict[str, float]], learner: dict[str, float], rollout: dict[str, float],
                    count: int) -> int:
    """Place learners first on the nodes that hold the fewest rollout actors (the head, learner nodes)."""
    order = sorted(range(len(nodes)), key=lambda i: _node_fit(nodes[i], rollout) if rollout else 0)
    ordered = [nodes[i] for i in order]
    return _place(ordered, learner, count)


def rollout_capacity(cluster_cfg: ClusterConfig, use_gpu: bool, *, num_learners: int) -> int:
    """How many rollout actors the cluster's alive nodes hold next to `num_learners` learners (totals, not free).

    With an autoscaler the driver polls this and adds rollout actors as nodes arrive.
    """
    nodes = _alive_node_resources()
    bundle = _bundle(cluster_cfg, "rollout", use_gpu)
    _place_learners(nodes, _bundle(cluster_cfg, "learner", use_gpu), bundle, num_learners)
    if not bundle:
        return 1 << 30
    return sum(_node_fit(node, bundle) for node in nodes)


def _node_fit(node: dict[str, float], bundle: dict[str, float]) -> int:
    return min(math.floor((node.get(k, 0.0) + _EPS) / v) for k, v in bundle.items())


def _shortfall(parts: list[tuple[str, int, dict[str, float]]], have: dict[str, float]) -> str:
    """Which resource the plan runs out of, e.g. `3 CPU (1 learners x 1 + 2 rollout workers x 1), the cluster has 2`."""
    for key in dict.fromkeys(k for _, _, bundle in parts for k in bundle):
        need = sum(count * bundle.get(key, 0.0) for _, count, bundle in parts)
        if have.get(key, 0.0) + _EPS < need:
            terms = " + ".join(f"{count} {what} x {bundle.get(key, 0.0):g}" for what, count, bundle in parts)
            return f"{need:g} {key} ({terms}), the cluster has {have.get(key, 0.0):g}"
    return "the totals suffice but no node has room for one more actor (per-node CPU/GPU/custom resources)"


def check_resources(cfg: Config) -> dict[str, Any]:
    """Refuse a plan the connected cluster cannot hold; return the plan (use_gpu, bundles, counts that fit).

    Without `cluster.autoscale`, every learner and every rollout actor must fit on the alive nodes at once
    (otherwise Ray leaves them pending forever). With it nothing is refused, since missing nodes are expected to
    arrive; the plan's `rollout_capacity` says how many rollout actors fit the nodes alive now.
    """
    cc = cfg.cluster
    use_gpu = resolve_use_gpu(cc)
    learners, rollouts = cfg.cluster.num_learners, cfg.cluster.num_rollout_workers
    learner_bundle = _bundle(cc, "learner", use_gpu)
    rollout_bundle = _bundle(cc, "rollout", use_gpu)
    total = dict(ray.cluster_resources())
    plan: dict[str, Any] = {
        "use_gpu": use_gpu,
        "learner_bundle": learner_bundle,
        "rollout_bundle": rollout_bundle,
        "num_learners": learners,
        "num_rollout_workers": rollouts,
        "gpus_requested": learners * learner_bundle.get("GPU", 0.0) + rollouts * rollout_bundle.get("GPU", 0.0),
        "gpus_in_cluster": float(total.get("GPU", 0.0)),
    }
    if cc.autoscale:
        plan["rollout_capacity"] = rollout_capacity(cc, use_gpu, num_learners=learners)
        return plan
    if plan["gpus_requested"] > plan["gpus_in_cluster"] + _EPS:
        raise ClusterError(
            f"the run asks for {plan['gpus_requested']:g} GPUs ({learners} learners x "
            f"{learner_bundle.get('GPU', 0.0):g} + {rollouts} rollout workers x {rollout_bundle.get('GPU', 0.0):g}) "
            f"but the Ray cluster has {plan['gpus_in_cluster']:g}; lower cluster.num_learners/"
            f"cluster.num_rollout_workers/cluster.rollout_gpus, set cluster.use_gpu=false, or add GPU nodes "
            f"(cluster.autoscale=true on an autoscaling cluster)"
        )
    for role, custom in (("learner", cc.learner_resource), ("rollout", cc.rollout_resource)):
        if custom and total.get(custom, 0.0) <= 0:
            raise ClusterError(
                f"cluster.{role}_resource is '{custom}' but no node advertises it; start {role} nodes with "
                f"`ray start --resources='{{\"{custom}\": N}}'` (or node type resources in cluster/gpu.yaml), "
                f"or set cluster.{role}_resource=null"
            )
    nodes = _alive_node_resources()
    placed_learners = _place_learners(nodes, learner_bundle, rollout_bundle, learners)
    if placed_learners < learners:
        raise ClusterError(
            f"learners do not fit: {_shortfall([('learners', learners, learner_bundle)], total)}; lower "
            f"cluster.num_learners or cluster.learner_cpus, or add nodes"
        )
    placed_rollouts = _place(nodes, rollout_bundle, rollouts)
    parts = [("learners", learners, learner_bundle), ("rollout workers", rollouts, rollout_bundle)]
    if placed_rollouts < rollouts:
        raise ClusterError(
            f"rollout workers do not fit next to {learners} learners: only {placed_rollouts} of {rollouts} "
            f"({_shortfall(parts, total)}); lower "
            f"cluster.num_rollout_workers or cluster.rollout_cpus/rollout_gpus, add nodes, or set "
            f"cluster.autoscale=true on an autoscaling cluster"
        )
    plan["rollout_capacity"] = placed_rollouts
    return plan


def request_rollout_resources(
    n: int, cluster_cfg: ClusterConfig, *, num_learners: int = 0, use_gpu: bool | None = None
) -> list[dict[str, float]]:
    """Ask the autoscaler for room for `n` rollout actors (and `num_learners` learners); returns the bundles asked.

    `request_resources` sets a floor on the cluster's size that replaces the previous request, so the learners'
    bundles are part of it. A no-op (returns []) unless `cluster.autoscale` is on.
    """
    if not cluster_cfg.autoscale:
        return []
    from ray.autoscaler.sdk import request_resources

    gpu = resolve_use_gpu(cluster_cfg) if use_gpu is None else use_gpu
    bundles = [_bundle(cluster_cfg, "learner", gpu)] * num_learners + [_bundle(cluster_cfg, "rollout", gpu)] * n
    bundles = [b for b in bundles if b]
    request_resources(bundles=bundles)
    return bundles


# ---------------------------------------------------------------------------------------------------------
# Job submission
# ---------------------------------------------------------------------------------------------------------


def job_runtime_env() -> dict[str, Any]:
    """`ray job submit --runtime-env-json` value: upload the code (not data, checkpoints or runs), stay offline."""
    return {"excludes": list(JOB_EXCLUDES), "env_vars": dict(OFFLINE_ENV)}


if __name__ == "__main__":
    print(json.dumps(job_runtime_env()))
