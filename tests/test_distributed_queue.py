"""The helper actors on a real local Ray: the ReplayQueue's waiting, ownership and snapshots around its ticket board
(the schedule itself is tested without Ray in tests/test_schedule.py), the WeightStore and the RunControl."""

from __future__ import annotations

import numpy as np
import pytest
import ray
import torch
from test_schedule import make_group, make_plan

from sopo_ray.distributed.control import RunControl
from sopo_ray.distributed.replay_queue import ReplayQueue, Status
from sopo_ray.distributed.resume import ResumePoint, capture_pipeline, restore_services
from sopo_ray.distributed.weights import WeightStore, fetch_weights
from sopo_ray.errors import ClusterError

pytestmark = pytest.mark.ray


def new_queue(**plan):
    return ray.remote(ReplayQueue).options(num_cpus=0).remote(make_plan(**plan))


def deliver(queue, worker: str, reply, reward: float = 0.3) -> dict:
    t = reply.ticket
    groups = [make_group(p, t.version, reward=reward, ticket=t.ticket_id, worker=worker) for p in t.positions]
    return ray.get(queue.put.remote(worker, t.ticket_id, t.incarnation, groups))


def test_the_queue_waits_wakes_owns_the_groups_and_closes(ray_cluster):
    queue = new_queue()
    first, second = (ray.get(queue.claim.remote("w0")) for _ in range(2))
    assert first.status is Status.OK and (first.ticket.start, second.ticket.start) == (0, 4)
    wait = ray.get(queue.claim.remote("w0", 0.2))
    assert (wait.status, wait.reason) == (Status.WAIT, "staleness")       # steps 2-3 need version 1
    pending = queue.get_batch.remote(0, 0, 4, 30.0)                      # waits for the groups to arrive
    assert deliver(queue, "w0", first) == {"accepted": 4, "nonfinite": 0}
    batch = ray.get(pending)
    assert batch.status is Status.OK and batch.versions == [0] * 4
    assert [g.position for g in batch.groups.fetch()] == [0, 1, 2, 3]    # the queue's own copies
    assert ray.get(queue.get_batch.remote(1, 0, 4, 0.2)).status is Status.WAIT
    deliver(queue, "w0", second)
    snap = ray.get(queue.snapshot.remote())
    assert [g.position for g in snap.groups.fetch()] == [4, 5, 6, 7]
    restored = new_queue()
    assert ray.get(restored.restore.remote(snap.state, snap.groups.fetch())) == {"queued": 4, "reissue": 0}
    for q in (queue, restored):
        assert [g.position for g in ray.get(q.get_batch.remote(1, 0, 4)).groups.fetch()] == [4, 5, 6, 7]
        stats = ray.get(q.stats.remote())
        assert stats["generated"] == stats["consumed"] == 8 and stats["accounting_ok"] and stats["now"] > 0
    waiting = queue.claim.remote("w1", 30.0)
    ray.get(queue.close.remote("test"))
    closed = ray.get(waiting)
    assert (closed.status, closed.reason) == (Status.CLOSED, "test")
    assert ray.get(queue.get_batch.remote(2, 1, 4)).status is Status.CLOSED
    for q in (queue, restored):
        ray.kill(q)


def test_ticket_objects_outlive_the_worker_that_delivered_them_and_serve_batches_across_tickets(ray_cluster):
    """Each delivered ticket is one object the queue owns: groups put by an actor that is then killed still fetch,
    bit for bit; a batch across two tickets names each object once, and a ticket partly taken keeps its rest."""

    class Courier:
        """Hands a ticket's groups to the queue as a rollout worker does (the queue copies them on receipt)."""

        def __init__(self, queue) -> None:
            self.queue = queue

        def put(self, *args) -> dict[str, int]:
            return ray.get(self.queue.put.remote(*args))

    queue = new_queue(max_staleness=1, capacity=16, total_steps=20, rollout_batch_size=3)
    courier = ray.remote(Courier).options(num_cpus=0).remote(queue)
    sent = {}
    for _ in range(2):
        t = ray.get(queue.claim.remote("w0")).ticket
        groups = [make_group(p, t.version, ticket=t.ticket_id) for p in t.positions]
        assert ray.get(courier.put.remote("w0", t.ticket_id, t.incarnation, groups))["accepted"] == 3
        sent.update({g.position: g for g in groups})
    ray.kill(courier)
    first = ray.get(queue.get_batch.remote(0, 0, 2))
    assert len(first.groups.refs) == 1 and first.groups.slots == [(0, 0), (0, 1)]
    got = first.groups.fetch()
    del first
    second = ray.get(queue.get_batch.remote(1, 0, 4)).groups     # the rest of ticket 0, then ticket 1
    assert len(second.refs) == 2 and [r for r, _ in second.slots] == [0, 1, 1, 1]
    got += second.fetch()
    assert [g.position for g in got] == list(range(6))
    for g in got:
        np.testing.assert_array_equal(g.x_l, sent[g.position].x_l)
        assert g.caption_id == sent[g.position].caption_id and g.worker == "w0"
    ray.kill(queue)


def test_weight_store_versions_timeouts_and_rollback(ray_cluster):
    store = ray.remote(WeightStore).options(num_cpus=0).remote(2)
    with pytest.raises(ClusterError, match="holds no published version yet"):
        fetch_weights(store, None, 30.0, "test")
    with pytest.raises(ClusterError, match="holds no version 0"):
        fetch_weights(store, 0, 0.3, "test")
    for v in range(3):
        ray.get(store.publish.remote(v, v * 5, {"w": np.full(3, v, np.float32)}))
    version, state = fetch_weights(store, None, 5.0, "test")
    assert version == 2 and state["w"].tolist() == [2, 2, 2]
    assert fetch_weights(store, 1, 5.0, "test")[1]["w"][0] == 1
    assert ray.get(store.get.remote(0)) is None                    # evicted: keeps the newest 2
    ray.get(store.publish.remote(1, 5, {"w": np.zeros(3, np.float32)}))   # learner restarted at version 1
    assert ray.get(store.held.remote()) == {"versions": [1], "republished": 1}
    ray.kill(store)


def test_run_control_status_stop_records_restarts_and_rollout_reports(ray_cluster):
    control = ray.remote(RunControl).options(num_cpus=0).remote(0.5, 3)
    assert ray.get(control.request_stop.remote("signal")) and ray.get(control.status.remote())["state"] == \
        "stop_requested"
    ray.get(control.set_status.remote("stopped", "on request", step=4))
    assert not ray.get(control.request_stop.remote("too late"))
    assert ray.get(control.status.remote()) == {"state": "stopped", "message": "on request", "step": 4,
                                                "learner_restarts": 0}
    ray.get(control.report.remote([{"step": 1}, {"step": 2}]))
    assert [r["step"] for r in ray.get(control.drain.remote())] == [1, 2] and ray.get(control.drain.remote()) == []
    ray.get(control.worker_report.remote("w0", {"version": 1}, [(0.2, 0.4, 0.6), (0.6, 0.7, 0.8)]))
    ray.get(control.worker_report.remote("w1", {"version": 2}, [(float("nan"), 0.5, 0.9), (0.4, 0.5, 0.6),
                                                                (0.3, 0.5, 0.7)]))
    rollout = ray.get(control.rollout.remote())                    # the newest 3 groups, the NaN one left out
    assert set(rollout["workers"]) == {"w0", "w1"} and rollout["workers"]["w1"]["version"] == 2
    assert rollout["reward_l_mean"] == pytest.approx(0.35) and rollout["frac_below_tau"] == 1.0
    ray.get(control.forget_worker.remote("w0"))
    assert set(ray.get(control.rollout.remote())["workers"]) == {"w1"}
    ray.kill(control)



def test_a_checkpoint_inside_a_sync_window_resumes_rollouts_on_that_versions_weights(ray_cluster):
    """Version 1 is published at step 2 (sync_interval 2); at step 3 the learner's policy has trained past it, so a
    checkpoint there keeps version 1's own weights and the resumed store serves those, not the learner's policy.
    At a window's first step (4) the policy is the published version 2 and nothing extra is kept; deterministic
    mode also keeps the staleness window's versions (its tickets name exact versions)."""
    plans = {det: make_plan(deterministic=det, max_staleness=1) for det in (False, True)}
    queue, store = new_queue(max_staleness=1), ray.remote(WeightStore).options(num_cpus=0).remote(4)
    for v in (0, 1):
        ray.get(store.publish.remote(v, 2 * v, {"w": np.full(3, v, np.float32)}))
    inside = {det: capture_pipeline(queue, store, plan, 3, keep_groups=True, timeout_s=30.0)
              for det, plan in plans.items()}
    assert sorted(inside[False].versions) == [1] and sorted(inside[True].versions) == [0, 1]
    assert inside[False].versions[1]["w"].tolist() == [1, 1, 1]
    ray.get(store.publish.remote(2, 4, {"w": np.full(3, 2, np.float32)}))
    assert [sorted(capture_pipeline(queue, store, plans[det], 4, keep_groups=True, timeout_s=30.0).versions)
            for det in (False, True)] == [[], [1]]
    learner = {"step": 3, "version": 1, "state": {"policy": {"w": torch.full((3,), 7.0)}}}
    resumed = ray.remote(WeightStore).options(num_cpus=0).remote(4)
    assert restore_services(ResumePoint("step_3", learner, inside[False]), {}, resumed, queue) == 3
    assert fetch_weights(resumed, None, 5.0, "test")[0] == 1
    assert fetch_weights(resumed, 1, 5.0, "test")[1]["w"].tolist() == [1, 1, 1]   # not the learner's 7s
    for actor in (queue, store, resumed):
        ray.kill(actor)
