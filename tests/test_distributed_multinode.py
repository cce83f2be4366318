"""The real driver on a simulated two-node cluster (ray.cluster_utils.Cluster): the head (1 CPU) hosts the learner,
a node advertising the custom resource `rollout` hosts the rollout worker. Runs in a subprocess because the
session's in-process Ray (`ray_cluster`) already exists."""

from __future__ import annotations

import pytest

pytestmark = [pytest.mark.slow]

CHILD = r"""
import json, sys
from pathlib import Path
import ray
from ray.cluster_utils import Cluster
from sopo_ray.config import load_config
from sopo_ray.distributed.driver import Driver
from sopo_ray.tracking import read_metrics

workdir, run_dir = sys.argv[1], Path(sys.argv[2])
cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "object_store_memory": 200 * 2**20})
try:
    rollout_node = cluster.add_node(num_cpus=1, resources={"rollout": 1}, object_store_memory=200 * 2**20)
    cfg = load_config("configs/smoke.yaml", [f"workdir={workdir}", f"data.root={workdir}/data",
                      f"cluster.address={cluster.address}", "cluster.rollout_resource=rollout",
                      "log.final_eval=false"])
    code = Driver(cfg, run_dir).run()
    pipeline = [r for r in read_metrics(run_dir / "metrics.jsonl") if r.get("event") == "pipeline"]
    nodes = sorted({n for r in pipeline for n in r.get("rollout/nodes", [])})
    print("RESULT " + json.dumps({"code": code, "rollout_nodes": nodes, "rollout_node": rollout_node.node_id,
                                  "head_node": cluster.head_node.node_id}), flush=True)
finally:
    ray.shutdown()
    cluster.shutdown()
"""


def test_rollout_workers_land_on_the_rollout_node(simulated_cluster_child, smoke_workdir, tmp_path):
    out = simulated_cluster_child(CHILD, str(smoke_workdir), str(tmp_path / "run"))
    assert out["code"] == 0
    assert out["rollout_nodes"] == [out["rollout_node"]] and out["head_node"] not in out["rollout_nodes"]
