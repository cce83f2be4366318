"""A simulated multi-node Ray cluster on one machine (ray.cluster_utils.Cluster), driven through
sopo_ray.distributed.cluster; prints one `RESULT {json}` line.

tests/test_cluster_connect.py runs it in a subprocess with its own RAY_TMPDIR, apart from the session's Ray.
Head: 1 CPU, no custom resources. Two worker nodes advertise `rollout: 1`; a third arrives mid-run and leaves.
"""

from __future__ import annotations

import json
import time

import ray
from ray.cluster_utils import Cluster

from sopo_ray.config import load_config
from sopo_ray.distributed.cluster import connect
from sopo_ray.distributed.placement import actor_options, check_resources, request_rollout_resources, rollout_capacity
from sopo_ray.errors import ClusterError


@ray.remote
class NodeProbe:
    """Stands in for a rollout actor: reports the node it was placed on."""

    def node(self) -> str:
        return ray.get_runtime_context().get_node_id()


def _wait_capacity(cfg, expected: int, timeout_s: float = 60.0) -> int:
    deadline = time.monotonic() + timeout_s
    while True:
        capacity = rollout_capacity(cfg.cluster, False, num_learners=cfg.cluster.num_learners)
        if capacity == expected or time.monotonic() > deadline:
            return capacity
        time.sleep(0.5)


def main() -> dict:
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    out: dict = {}
    try:
        workers = [cluster.add_node(num_cpus=1, resources={"rollout": 1}) for _ in range(2)]
        overrides = [f"cluster.address={cluster.address}", "cluster.rollout_resource=rollout",
                     "cluster.use_gpu=false", "cluster.num_rollout_workers=2", "cluster.num_learners=1"]
        cfg = load_config(None, overrides)
        out["connect"] = connect(cfg.cluster)
        out["head_node"] = cluster.head_node.node_id
        out["worker_nodes"] = [n.node_id for n in workers]
        out["plan"] = check_resources(cfg)
        try:
            check_resources(load_config(None, [*overrides, "cluster.num_rollout_workers=3"]))
        except ClusterError as exc:
            out["over_request"] = str(exc)

        options = actor_options(cfg.cluster, "rollout", use_gpu=False)
        actors = [NodeProbe.options(**options).remote() for _ in range(2)]
        out["placed"] = ray.get([a.node.remote() for a in actors], timeout=120)
        third = NodeProbe.options(**options).remote()
        third_ref = third.node.remote()
        ready, _ = ray.wait([third_ref], timeout=3)
        out["third_pending_before_new_node"] = not ready

        extra = cluster.add_node(num_cpus=1, resources={"rollout": 1})
        out["extra_node"] = extra.node_id
        out["capacity_after_add"] = _wait_capacity(cfg, 3)
        out["third_placed"] = ray.get(third_ref, timeout=120)

        autoscaling = load_config(None, [*overrides, "cluster.autoscale=true"]).cluster
        out["requested"] = request_rollout_resources(4, autoscaling, num_learners=1, use_gpu=False)
        out["plan_autoscale_over"] = check_resources(
            load_config(None, [*overrides, "cluster.autoscale=true", "cluster.num_rollout_workers=8"]))

        for actor in (*actors, third):
            ray.kill(actor)
        cluster.remove_node(extra)
        out["capacity_after_remove"] = _wait_capacity(cfg, 2)
    finally:
        ray.shutdown()
        cluster.shutdown()
    return out


if __name__ == "__main__":
    print("RESULT " + json.dumps(main()), flush=True)
