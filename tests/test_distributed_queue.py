"""Schedule arithmetic, seeds, RolloutGroup, and the ReplayQueue / WeightStore actors on a real local Ray."""

from __future__ import annotations

import time

import numpy as np
import pytest
import ray

from sopo_ray.checkpoint import load_checkpoint, save_checkpoint
from sopo_ray.distributed.group import RolloutGroup, caption_table
from sopo_ray.distributed.replay_queue import ReplayQueue
from sopo_ray.distributed.schedule import SchedulePlan
from sopo_ray.distributed.seeds import caption_order, derive_seed, sample_seeds
from sopo_ray.distributed.weights import WeightStore, fetch_weights
from sopo_ray.errors import ClusterError

D = 263


def make_plan(**kw) -> SchedulePlan:
    base = dict(num_captions=10, batch_size=4, rollout_batch_size=4, sync_interval=2, max_staleness=0,
                total_steps=6, capacity=8, seed=0, deterministic=False)
    base.update(kw)
    return SchedulePlan(**base)


def make_group(position: int, version: int, k: int = 2, length: int = 5, reward: float = 0.3,
               ticket: int = 0, worker: str = "w0") -> RolloutGroup:
    rng = np.random.default_rng(position)
    rewards = np.array([reward, reward + 0.2] + [0.9] * (k - 2), dtype=np.float32)
    return RolloutGroup(
        caption_id=f"m{position}#0", caption=f"caption {position}", motion_index=position % 7, length=length,
        x_l=rng.standard_normal((length, D)).astype(np.float32), rewards=rewards,
        sims_w=np.full(k, 0.5, dtype=np.float32), loser=0, winner=1, policy_version=version,
        seeds=np.array(sample_seeds(0, f"m{position}#0", k, version), dtype=np.int64), created_at=time.time(),
        ticket=ticket, position=position, worker=worker,
    ).validate()


# ---------------------------------------------------------------------------------------------------------
# Pure parts
# ---------------------------------------------------------------------------------------------------------


def test_seeds_are_stable_distinct_and_depend_on_every_part():
    a = sample_seeds(3, "000001#0", 4, 2)
    assert a == sample_seeds(3, "000001#0", 4, 2)
    assert len(set(a)) == 4
    assert a != sample_seeds(4, "000001#0", 4, 2)
    assert a != sample_seeds(3, "000001#1", 4, 2)
    assert a != sample_seeds(3, "000001#0", 4, 3)
    assert 0 <= derive_seed(0, "x") < 2**63


def test_caption_stream_visits_every_caption_once_per_epoch():
    plan = make_plan(num_captions=7)
    first, second = plan.captions(0, 7), plan.captions(7, 7)
    assert sorted(first) == list(range(7)) and sorted(second) == list(range(7))
    assert first != second
    assert plan.captions(5, 4) == first[5:] + second[:2]
    assert list(caption_order(0, 7, 1)) == second


def test_tickets_stop_at_sync_windows_and_need_the_right_version():
    plan = make_plan(batch_size=4, rollout_batch_size=3, sync_interval=2, max_staleness=1)
    # window 0 = positions 0..7 (steps 0, 1); a ticket starting at 6 stops at 8
    assert plan.ticket_span(6, need=100) == (2, 1, 0)
    assert plan.ticket_span(8, need=100) == (3, 2, 0)       # step 2 is version 1, staleness 1 allows version 0
    assert plan.ticket_span(16, need=100) == (3, 4, 1)
    assert plan.ticket_span(16, need=2) == (2, 4, 1)
    assert plan.staleness_reason(0, 1) is None and plan.staleness_reason(0, 2) == "stale"
    assert plan.staleness_reason(3, 2) == "rolled_back"


def test_group_validate_and_checkpoint_round_trip(tmp_path):
    group = make_group(3, version=2)
    group.x_best = np.ones((5, D), dtype=np.float32)
    path = save_checkpoint(tmp_path / "g.pt", "test", {"groups": [group.to_state()]}, {})
    back = RolloutGroup.from_state(load_checkpoint(path, "test")["state"]["groups"][0])
    assert back.caption_id == group.caption_id and back.policy_version == 2
    np.testing.assert_array_equal(back.x_l, group.x_l)
    np.testing.assert_array_equal(back.seeds, group.seeds)
    assert back.reward_l == pytest.approx(0.3)
    with pytest.raises(ValueError, match="sims_w"):
        RolloutGroup(**{**group.__dict__, "sims_w": np.zeros(3, np.float32)}).validate()
    with pytest.raises(ValueError, match="x_l"):
        RolloutGroup(**{**group.__dict__, "x_l": np.zeros((4, D), np.float32)}).validate()
    bad = make_group(1, 0)
    bad.rewards[1] = np.nan
    assert not bad.is_finite() and group.is_finite()


def test_caption_table_ids_follow_the_contract():
    table = caption_table(["000001", "000002"], [["a", "b"], ["c"]])
    assert [c.caption_id for c in table] == ["000001#0", "000001#1", "000002#0"]
    assert [c.motion_index for c in table] == [0, 0, 1]


# ---------------------------------------------------------------------------------------------------------
# Actors
# ---------------------------------------------------------------------------------------------------------


def new_queue(plan: SchedulePlan):
    return ray.remote(ReplayQueue).options(num_cpus=0).remote(plan, 0.45)


def deliver(queue, worker: str, reply, version: int | None = None, reward: float = 0.3) -> dict:
    t = reply.ticket
    groups = [make_group(t.start + i, t.version if version is None else version, reward=reward, ticket=t.ticket_id,
                         worker=worker) for i in range(t.size)]
    return ray.get(queue.put.remote(worker, t.ticket_id, t.epoch, groups))


def test_queue_schedule_backpressure_and_accounting(ray_cluster):
    queue = new_queue(make_plan())
    first = ray.get(queue.claim.remote("w0"))
    second = ray.get(queue.claim.remote("w0"))
    assert (first.status, first.ticket.start, first.ticket.version) == ("ticket", 0, 0)
    assert second.ticket.start == 4
    third = ray.get(queue.claim.remote("w0", None, 0.2))
    assert (third.status, third.reason) == ("wait", "staleness")      # steps 2-3 need version 1 (staleness 0)
    deliver(queue, "w0", first)
    deliver(queue, "w0", second)
    batch = ray.get(queue.get_batch.remote(0, 0, 4))
    assert batch.status == "ok" and batch.versions == [0] * 4
    groups = ray.get(batch.groups)
    assert [g.position for g in groups] == [0, 1, 2, 3]
    ray.get(queue.get_batch.remote(1, 0, 4))
    # the learner published version 1 and asks for step 2: the next window's ticket is issued
    pending = queue.get_batch.remote(2, 1, 4, 10.0)
    third = ray.get(queue.claim.remote("w0"))
    assert (third.status, third.ticket.start, third.ticket.version) == ("ticket", 8, 1)
    deliver(queue, "w0", third)
    assert ray.get(pending).status == "ok"
    stats = ray.get(queue.stats.remote())
    assert stats["generated"] == 12 and stats["consumed"] == 12 and stats["accounting_ok"]
    assert stats["staleness_hist"] == {0: 12}


def test_queue_drops_stale_nonfinite_and_orphaned_groups(ray_cluster):
    queue = new_queue(make_plan(max_staleness=1, capacity=16, total_steps=20))
    tickets = [ray.get(queue.claim.remote("w0")) for _ in range(3)]
    assert [t.ticket.version for t in tickets] == [0, 0, 0]
    deliver(queue, "w0", tickets[0])
    out = deliver(queue, "w0", tickets[1], reward=float("nan"))
    assert out == {"accepted": 0, "nonfinite": 4}
    # a learner at version 2 may not train version-0 groups (max_staleness 1)
    reply = ray.get(queue.get_batch.remote(4, 2, 4, 0.3))
    assert reply.status == "timeout" and reply.dropped == {"stale": 4}
    ray.get(queue.release_worker.remote("w0"))
    late = deliver(queue, "w0", tickets[2])                  # its ticket was given back: nothing enters twice
    assert late == {"accepted": 0, "orphaned": 4}
    reissued = ray.get(queue.claim.remote("w1"))
    assert reissued.ticket.ticket_id == tickets[2].ticket.ticket_id and reissued.ticket.start == 8
    s = ray.get(queue.stats.remote())
    assert s["dropped"]["stale"] == 4 and s["dropped"]["nonfinite"] == 4 and s["dropped"]["orphaned"] == 4
    assert s["generated"] == 12 and s["size"] == 0 and s["accounting_ok"]


@pytest.mark.parametrize("kw", [{}, {"max_staleness": 3, "total_steps": 20},
                                {"rollout_batch_size": 3, "max_staleness": 1, "capacity": 40, "total_steps": 20}],
                         ids=["staleness-bound", "capacity-bound", "window-split-tickets"])
def test_max_busy_workers_is_what_a_real_queue_hands_out(ray_cluster, kw):
    plan = make_plan(**kw)
    queue = new_queue(plan)
    tickets = 0
    while ray.get(queue.claim.remote(f"w{tickets}", None, 0.2)).status == "ticket":
        tickets += 1
    assert tickets == plan.max_busy_workers
    ray.get(queue.close.remote("test"))


def test_queue_capacity_bounds_queued_plus_inflight(ray_cluster):
    queue = new_queue(make_plan(max_staleness=3, capacity=8, total_steps=20))
    a, b = ray.get(queue.claim.remote("w0")), ray.get(queue.claim.remote("w1"))
    full = ray.get(queue.claim.remote("w2", None, 0.2))
    assert a.status == b.status == "ticket" and (full.status, full.reason) == ("wait", "queue_full")
    deliver(queue, "w0", a)
    ray.get(queue.get_batch.remote(0, 0, 4))
    assert ray.get(queue.claim.remote("w2")).status == "ticket"
    ray.get(queue.close.remote("test"))
    assert ray.get(queue.claim.remote("w0")).status == "closed"
    assert ray.get(queue.get_batch.remote(1, 0, 4)).status == "closed"


def test_deterministic_queue_delivers_in_stream_order_and_snapshot_restores(ray_cluster):
    plan = make_plan(deterministic=True, max_staleness=1, capacity=12, total_steps=6)
    queue = new_queue(plan)
    t0, t1, t2 = (ray.get(queue.claim.remote(f"w{i}")) for i in range(3))
    deliver(queue, "w2", t2)
    deliver(queue, "w1", t1)
    assert ray.get(queue.get_batch.remote(0, 0, 4, 0.3)).status == "timeout"   # position 0 still in flight
    deliver(queue, "w0", t0)
    got = ray.get(ray.get(queue.get_batch.remote(0, 0, 4)).groups)
    assert [g.position for g in got] == [0, 1, 2, 3]

    snap = ray.get(queue.snapshot.remote())
    payloads = ray.get([r[0] for r in snap["refs"]])
    restored = new_queue(plan)
    assert ray.get(restored.restore.remote({k: v for k, v in snap.items() if k != "refs"}, payloads)) == {
        "queued": 8, "reissue": 0}
    for q in (queue, restored):
        got = ray.get(ray.get(q.get_batch.remote(1, 0, 4)).groups)
        assert [g.position for g in got] == [4, 5, 6, 7]
        nxt = ray.get(q.claim.remote("w9"))
        assert (nxt.ticket.start, nxt.ticket.version) == (12, 0)
    a, b = ray.get(queue.stats.remote()), ray.get(restored.stats.remote())
    for key in ("generated", "consumed", "dropped", "size", "next_position"):
        assert a[key] == b[key]

    dropped = new_queue(plan)
    ray.get(dropped.restore.remote({k: v for k, v in snap.items() if k != "refs"}, None))
    s = ray.get(dropped.stats.remote())
    assert s["dropped"]["resume"] == 8 and s["size"] == 0 and s["accounting_ok"]


def test_weight_store_versions_timeouts_and_records(ray_cluster):
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
    status = ray.get(store.status.remote())
    assert status["versions"] == [1] and status["republished"] == 1
    ray.get(store.report.remote([{"step": 1}, {"step": 2}]))
    assert [r["step"] for r in ray.get(store.drain.remote())] == [1, 2]
    assert ray.get(store.drain.remote()) == []
