"""The rollout pool follows an autoscaling cluster (`cluster.autoscale=true`), on a simulated cluster
(ray.cluster_utils.Cluster) in a subprocess: the run starts with no rollout node, asks for one per rollout worker,
adds a rollout actor as each node arrives, and when a node goes away its actor is not replaced; the learner keeps
its schedule throughout and the run finishes every step."""

from __future__ import annotations

import pytest

pytestmark = [pytest.mark.slow]

CHILD = r"""
import json, sys, threading, time
from pathlib import Path
import ray
from ray.cluster_utils import Cluster
from sopo_ray.config import load_config
from sopo_ray.distributed.driver import Driver
from sopo_ray.distributed.rollout import RolloutWorker
from sopo_ray.tracking import read_metrics


class PacedWorker(RolloutWorker):
    # >= 0.7 s per rollout batch, so the tiny run lasts long enough for nodes to come and go.
    def generate(self, caption_indices, version, positions=None, ticket=-1):
        time.sleep(0.7)
        return super().generate(caption_indices, version, positions, ticket)


def wait_for(what, condition, timeout=300):
    deadline = time.time() + timeout
    while not condition():
        if time.time() > deadline:
            raise TimeoutError(what)
        time.sleep(0.2)


workdir, run_dir = sys.argv[1], Path(sys.argv[2])
# The head is the learner node (as in cluster/gpu.yaml, learners ask for a `learner` resource): otherwise Ray Train,
# starting after a rollout node joined, may put the learner on it and starve the rollout actor of its CPU.
cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "resources": {"learner": 1},
                                                        "object_store_memory": 200 * 2**20})
try:
    cfg = load_config("configs/smoke.yaml", [
        f"workdir={workdir}", f"data.root={workdir}/data", f"cluster.address={cluster.address}",
        "cluster.rollout_resource=rollout", "cluster.learner_resource=learner", "cluster.autoscale=true",
        "cluster.num_rollout_workers=2",
        "schedule.total_steps=40", "log.final_eval=false"])
    driver = Driver(cfg, run_dir, worker_cls=PacedWorker)
    result = {}
    thread = threading.Thread(target=lambda: result.update(code=driver.run()), daemon=True)
    thread.start()

    def steps():
        path = run_dir / "metrics.jsonl"
        return max([r["step"] for r in read_metrics(path) if r.get("event") == "step"], default=0) \
            if path.is_file() else 0

    wait_for("driver started", lambda: driver.pool is not None)
    time.sleep(3)
    empty_pool = len(driver.pool.workers)
    node_a = cluster.add_node(num_cpus=1, resources={"rollout": 1}, object_store_memory=200 * 2**20)
    wait_for("first learner steps", lambda: steps() >= 2)
    node_b = cluster.add_node(num_cpus=1, resources={"rollout": 1}, object_store_memory=200 * 2**20)
    wait_for("pool of 2", lambda: len(driver.pool.workers) == 2)
    wait_for("steps with 2 workers", lambda: steps() >= 12)
    cluster.remove_node(node_b)
    removed_at = steps()
    thread.join(timeout=600)
    records = list(read_metrics(run_dir / "metrics.jsonl"))
    print("RESULT " + json.dumps({
        "code": result.get("code"), "empty_pool": empty_pool, "removed_at": removed_at,
        "steps": [r["step"] for r in records if r.get("event") == "step"],
        "autoscale": [r for r in records if r.get("event") == "autoscale"],
        "targets": [r.get("rollout/pool_target") for r in records if r.get("event") == "pipeline"],
        "final": [r for r in records if r.get("event") == "pipeline"][-1],
        "node_a": node_a.node_id}), flush=True)
finally:
    ray.shutdown()
    cluster.shutdown()
"""


def test_rollout_pool_grows_and_shrinks_with_the_cluster(simulated_cluster_child, smoke_workdir, tmp_path):
    out = simulated_cluster_child(CHILD, str(smoke_workdir), str(tmp_path / "run"))
    assert out["code"] == 0
    assert out["empty_pool"] == 0                               # no rollout node yet: no actor started (none pending)
    bundles = out["autoscale"][0]["bundles"]
    assert out["autoscale"][0]["requested_rollout_workers"] == 2 and bundles.count({"CPU": 1.0, "rollout": 1.0}) == 2
    assert {"CPU": 1.0, "learner": 1.0} in bundles
    targets = [t for t in out["targets"] if t is not None]
    assert 2 in targets and targets[-1] == 1                    # grew to 2 with the second node, back to 1 after
    final = out["final"]
    # The node's actor died with it: not replaced (or, if Ray reported the actor dead before the node, replaced by
    # one that waits for a node and is then dropped).
    assert final["health/worker_node_lost"] + final["health/worker_replaced"] >= 1
    assert final["rollout/nodes"] == [out["node_a"]]             # the survivor serves from node A
    assert sorted(set(out["steps"])) == list(range(1, 41)) and out["steps"][-1] == 40
    dropped = sum(v for k, v in final.items() if k.startswith("queue/dropped_"))
    assert final["queue/accounting_ok"]
    assert final["queue/generated"] == final["queue/consumed"] + dropped + final["queue/size"]
