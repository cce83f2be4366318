"""Where each kind of actor runs, and whether the run fits the cluster.

- `actor_options` / `train_resources_per_worker` turn the cluster section into `.options(**...)` for rollout and
  helper actors and into Ray Train's `resources_per_worker` for learners. A node hosts rollout actors when it
  advertises the custom resource `cluster.rollout_resource` (one unit per actor, so `{"rollout": 4}` means four
  rollout actors), learners likewise with `cluster.learner_resource`.
- `check_resources` refuses a plan the cluster cannot hold (more GPUs than exist, a custom resource no node has)
  instead of letting actors wait forever; with `cluster.autoscale` the missing nodes are asked for with
  `request_rollout_resources` and `rollout_capacity` says how many rollout actors fit as nodes arrive.
"""

from __future__ import annotations

import math
from typing import Any, Literal

import ray

from sopo_ray.config import ClusterConfig, Config
from sopo_ray.errors import ClusterError

Role = Literal["rollout", "learner", "helper"]
_EPS = 1e-9


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
