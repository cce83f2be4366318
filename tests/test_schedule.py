"""The semi-online schedule without Ray: seeds, the caption stream, the group contract, and the whole replay-queue
state machine (`TicketBoard`): back-pressure, staleness, drops, re-issue, deterministic order, snapshots, and the
accounting invariant under random interleavings of every operation."""

from __future__ import annotations

import random
import time

import numpy as np
import pytest

from sopo_ray.checkpoint import load_checkpoint, save_checkpoint
from sopo_ray.distributed.group import RolloutGroup, caption_table
from sopo_ray.distributed.schedule import SchedulePlan
from sopo_ray.distributed.seeds import caption_order, derive_seed, sample_seeds
from sopo_ray.distributed.ticket_board import BoardState, Ticket, TicketBoard

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


def deliver(board: TicketBoard, ticket: Ticket, worker: str | None = None, version: int | None = None,
            reward: float = 0.3) -> dict[str, int]:
    worker = worker or ticket.worker
    groups = [make_group(p, ticket.version if version is None else version, reward=reward, ticket=ticket.ticket_id,
                         worker=worker) for p in ticket.positions]
    return board.put(worker, ticket.ticket_id, ticket.incarnation, groups, time.time())


def claim(board: TicketBoard, worker: str = "w0") -> Ticket | str:
    """A ticket, or the back-pressure reason why there is none."""
    return board.blocked_reason() or board.claim(worker, time.time())


def take(board: TicketBoard, step: int, version: int, n: int) -> list[int] | None:
    """Positions a learner at (step, version) gets, or None while fewer than n are deliverable (drops happen)."""
    board.learner_at(step, version)
    board.drop_unusable(version)
    if len(board.deliverable(n)) < n:
        return None
    return [it.position for it in board.take(n, version, time.time())]


class Holder:
    """A `TicketBoard.hold` that keeps every object it makes (a list of groups)."""

    def __init__(self) -> None:
        self.made: list[list[RolloutGroup]] = []

    def __call__(self, groups: list[RolloutGroup]) -> list[RolloutGroup]:
        self.made.append(list(groups))
        return self.made[-1]


def accounted(board: TicketBoard) -> bool:
    stats = board.stats(time.time())
    return stats["accounting_ok"] and stats["generated"] == (stats["consumed"] + sum(stats["dropped"].values())
                                                             + stats["size"])


# ---------------------------------------------------------------------------------------------------------
# Seeds, caption stream, contract
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
    assert [plan.version_at(s) for s in range(6)] == [0, 0, 1, 1, 2, 2]


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
# The ticket board
# ---------------------------------------------------------------------------------------------------------


def test_back_pressure_versions_and_accounting():
    """batch 4, sync 2, staleness 0, capacity 8: the module docstring's worked example."""
    board = TicketBoard(make_plan())
    first, second = claim(board), claim(board)
    assert (first.start, first.version, second.start) == (0, 0, 4)
    assert claim(board) == "staleness"                        # steps 2-3 need version 1 (staleness 0)
    deliver(board, first)
    deliver(board, second)
    assert take(board, 0, 0, 4) == [0, 1, 2, 3]
    assert take(board, 1, 0, 4) == [4, 5, 6, 7]
    assert claim(board) == "staleness"                        # the learner still holds version 0
    board.learner_at(2, 1)                                    # it published version 1 and asks for step 2
    third = claim(board)
    assert (third.start, third.version, third.target_step) == (8, 1, 2)
    deliver(board, third)
    assert take(board, 2, 1, 4) == [8, 9, 10, 11]
    stats = board.stats(time.time())
    assert stats["generated"] == 12 and stats["consumed"] == 12 and accounted(board)
    assert stats["staleness_hist"] == {0: 12}
    assert stats["in_per_s"] > 0 and stats["out_per_s"] > 0


def test_stale_nonfinite_and_orphaned_groups_are_dropped_and_tickets_reissued():
    board = TicketBoard(make_plan(max_staleness=1, capacity=16, total_steps=20))
    tickets = [claim(board) for _ in range(3)]
    assert [t.version for t in tickets] == [0, 0, 0]
    deliver(board, tickets[0])
    assert deliver(board, tickets[1], reward=float("nan")) == {"accepted": 0, "nonfinite": 4}
    # a learner at version 2 may not train version-0 groups (max_staleness 1)
    assert take(board, 4, 2, 4) is None and board.dropped["stale"] == 4
    assert board.release("w0") == [tickets[2].ticket_id]
    late = deliver(board, tickets[2], worker="w0")            # its ticket was given back: nothing enters twice
    assert late == {"accepted": 0, "orphaned": 4}
    reissued = claim(board, "w1")
    assert (reissued.ticket_id, reissued.start, reissued.worker) == (tickets[2].ticket_id, 8, "w1")
    stats = board.stats(time.time())
    assert stats["dropped"]["stale"] == 4 and stats["dropped"]["nonfinite"] == 4 and stats["dropped"]["orphaned"] == 4
    assert stats["generated"] == 12 and stats["size"] == 0 and accounted(board)
    assert stats["claimed_at"] == {"w1": reissued.claimed_at}


def test_a_learner_rolled_back_by_a_restart_drops_the_newer_groups():
    board = TicketBoard(make_plan(max_staleness=1, capacity=16, total_steps=20))
    board.learner_at(4, 2)
    ticket = claim(board)
    assert ticket.version == 1
    deliver(board, ticket, version=2)
    assert take(board, 2, 1, 4) is None and board.dropped["rolled_back"] == 4 and accounted(board)


@pytest.mark.parametrize("kw", [{}, {"max_staleness": 3, "total_steps": 20},
                                {"rollout_batch_size": 3, "max_staleness": 1, "capacity": 40, "total_steps": 20}],
                         ids=["staleness-bound", "capacity-bound", "window-split-tickets"])
def test_max_busy_workers_is_what_the_board_hands_out(kw):
    plan = make_plan(**kw)
    board, tickets = TicketBoard(plan), 0
    while isinstance(claim(board, f"w{tickets}"), Ticket):
        tickets += 1
    assert tickets == plan.max_busy_workers


def test_capacity_bounds_queued_plus_inflight_and_close_stops_everything():
    board = TicketBoard(make_plan(max_staleness=3, capacity=8, total_steps=20))
    a, b = claim(board, "w0"), claim(board, "w1")
    assert isinstance(a, Ticket) and isinstance(b, Ticket) and claim(board, "w2") == "queue_full"
    deliver(board, a)
    assert take(board, 0, 0, 4) == [0, 1, 2, 3]
    assert isinstance(claim(board, "w2"), Ticket)
    board.close("test")
    board.close("later")
    assert board.closed == "test" and board.stats(time.time())["blocked"] == "closed"


def test_the_run_needs_no_more_groups_than_it_trains():
    board = TicketBoard(make_plan(max_staleness=5, capacity=100, total_steps=3))
    tickets = []
    while isinstance(t := claim(board), Ticket):
        tickets.append(t)
    assert claim(board) == "done" and sum(t.size for t in tickets) == 12


def test_nonfinite_rewards_in_a_row_close_the_board_with_the_cause():
    board = TicketBoard(make_plan(max_nonfinite_groups=6, capacity=16, total_steps=20, max_staleness=2))
    a, b = claim(board), claim(board)
    deliver(board, a, reward=float("nan"))
    assert not board.closed
    deliver(board, b, reward=float("nan"))
    assert board.closed == "failed" and "NaN/inf for 8 groups in a row" in board.failure
    assert "faults.max_nonfinite_in_row" in board.failure and board.dropped["nonfinite"] == 8 and accounted(board)


def test_deterministic_delivery_in_stream_order_and_snapshot_restore(tmp_path):
    plan = make_plan(deterministic=True, max_staleness=1, capacity=12, total_steps=6)
    board = TicketBoard(plan)
    t0, t1, t2 = (claim(board, f"w{i}") for i in range(3))
    deliver(board, t2)
    deliver(board, t1)
    assert take(board, 0, 0, 4) is None                       # position 0 still in flight
    deliver(board, t0)
    assert take(board, 0, 0, 4) == [0, 1, 2, 3]
    next_ticket = claim(board, "w3")                          # in flight at the snapshot: re-issued after a restore
    state = board.snapshot()
    path = save_checkpoint(tmp_path / "p.pt", "pipeline", state.to_state(), {})   # weights_only-loadable
    back = BoardState.from_state(load_checkpoint(path, "pipeline")["state"])
    assert back == state
    restored = TicketBoard(plan)
    restored.restore(back, [held[i] for held, i in board.held()])
    assert restored.reissue[0].ticket_id == next_ticket.ticket_id and restored.inflight == {}
    for b in (board, restored):
        assert take(b, 1, 0, 4) == [4, 5, 6, 7]
    again = claim(restored, "w9")
    assert (again.ticket_id, again.start, again.caption_indices) == (next_ticket.ticket_id, next_ticket.start,
                                                                       next_ticket.caption_indices)
    for key in ("generated", "consumed", "dropped", "size", "next_position"):
        assert board.stats(0)[key] == restored.stats(0)[key], key

    dropped = TicketBoard(plan)
    dropped.restore(back, None)
    assert dropped.dropped["resume"] == 8 and not dropped.items and accounted(dropped)


def test_each_ticket_is_held_once_and_lives_while_any_of_its_groups_is_queued():
    """One held object per delivered ticket (its finite groups), each queued group an index into it: a ticket
    partly dropped (NaN) or partly taken keeps one object for the rest, a batch across tickets names each object,
    and a restore holds the queued groups again one object per ticket."""
    plan, hold = make_plan(max_staleness=2, capacity=16, total_steps=20), Holder()
    board, held = TicketBoard(plan, hold=hold), hold.made
    a, b = claim(board), claim(board)
    groups = [make_group(p, 0, ticket=a.ticket_id) for p in a.positions]
    groups[1] = make_group(1, 0, reward=float("nan"), ticket=a.ticket_id)
    assert board.put("w0", a.ticket_id, a.incarnation, groups, time.time()) == {"accepted": 3, "nonfinite": 1}
    deliver(board, b)
    assert [[g.position for g in obj] for obj in held] == [[0, 2, 3], [4, 5, 6, 7]]   # one object per ticket
    board.learner_at(0, 0)
    first = board.take(2, 0, time.time())
    assert [(it.payload is held[0], it.index) for it in first] == [(True, 0), (True, 1)]
    assert [it.payload[it.index].position for it in first] == [0, 2]
    rest, index = board.held()[0]
    assert rest is held[0] and index == 2                           # what is left of ticket a: the same object
    again = Holder()
    restored = TicketBoard(plan, hold=again)
    restored.restore(board.snapshot(), [obj[i] for obj, i in board.held()])
    assert [[g.position for g in obj] for obj in again.made] == [[3], [4, 5, 6, 7]]
    for bd in (board, restored):
        bd.learner_at(1, 0)
        assert [it.payload[it.index].position for it in bd.take(3, 0, time.time())] == [3, 4, 5]
        assert len({id(it.payload) for it in bd.items.values()}) == 1 and accounted(bd)
    bad = [make_group(p, 0) for p in range(8, 12)]
    bad[2].x_l = bad[2].x_l[:3]
    before = board.stats(0)
    with pytest.raises(ValueError, match="x_l"):                 # a malformed delivery changes nothing
        board.put("w0", 99, 0, bad, time.time())
    assert board.stats(0)["generated"] == before["generated"] and accounted(board)


def test_a_restarted_queue_refuses_deliveries_of_its_crashed_incarnation():
    plan = make_plan(max_staleness=1, capacity=16, total_steps=20)
    board = TicketBoard(plan)
    ticket = claim(board)
    mirror = board.snapshot()                                 # what the driver kept
    crashed = TicketBoard(plan, restoring=True)               # Ray restarted the actor: empty, restoring
    assert crashed.blocked_reason() == "restarting"
    crashed.restore(mirror, None, "queue_restart")
    assert crashed.incarnation == 1 and crashed.reissue[0].incarnation == 1
    assert deliver(crashed, ticket) == {"accepted": 0, "queue_restart": 4}
    again = claim(crashed, "w1")
    assert again.ticket_id == ticket.ticket_id and deliver(crashed, again)["accepted"] == 4 and accounted(crashed)


def interleave(plan: SchedulePlan, seed: int) -> TicketBoard:
    """Workers claim, deliver (sometimes NaN, sometimes late after being replaced), die and are replaced, a learner
    takes batches, publishes versions and now and then restarts from an older step, all in a random order; checks
    the guarantees at every moment and returns the board at the end of the run."""
    rng = random.Random(seed)
    board = TicketBoard(plan)
    held: dict[str, tuple[Ticket, int]] = {}                  # each worker's ticket and the version it loaded
    orphans: list[tuple[str, Ticket]] = []
    names = [f"w{i}" for i in range(4)]                        # a replaced worker's successor gets a new name
    step, trained, batches, restarts = 0, [], 0, 0
    for _ in range(5000):
        if step == plan.total_steps:
            break
        version = plan.version_at(step)
        board.learner_at(step, version)
        action = rng.random()
        if action < 0.3:
            worker = rng.choice(names)
            if worker not in held and isinstance(t := claim(board, worker), Ticket):
                held[worker] = t, t.version if plan.deterministic else version     # else: the newest weights
        elif action < 0.6 and held:
            worker = rng.choice(sorted(held))
            ticket, sampled = held.pop(worker)
            deliver(board, ticket, version=sampled, reward=float("nan") if rng.random() < 0.05 else 0.3)
        elif action < 0.64 and held:
            worker = rng.choice(sorted(held))
            board.release(worker)
            orphans.append((worker, held.pop(worker)[0]))
            names[names.index(worker)] = f"{worker}+"
        elif action < 0.68 and orphans:
            worker, ticket = orphans.pop(0)
            assert deliver(board, ticket, worker=worker)["accepted"] == 0
        elif action < 0.69 and restarts < 2 and step > 3:
            step -= rng.randint(1, 3)                          # a learner restart from an older checkpoint
            restarts += 1
        elif (got := take(board, step, version, plan.batch_size)) is not None:
            trained += got
            batches += 1
            step += 1
        assert accounted(board)
    assert step == plan.total_steps, "the schedule stalled"
    assert len(trained) == len(set(trained)) == batches * plan.batch_size      # no group trained twice
    assert set(board.staleness) <= set(range(plan.max_staleness + 1))         # never too old, never newer
    if plan.deterministic:
        assert trained == sorted(trained)                                     # stream order
    return board


@pytest.mark.parametrize("deterministic", [False, True], ids=["arrival-order", "deterministic"])
def test_random_interleavings_keep_every_guarantee(deterministic):
    """Every guarantee of the board (`interleave`) over many random runs of two schedules: the one-window-ahead
    shape of the defaults, and a fast-syncing one where a slow worker's groups go stale while the learner moves on;
    together the runs meet every drop reason a running pipeline has."""
    plans = [make_plan(num_captions=13, batch_size=4, rollout_batch_size=3, sync_interval=2, max_staleness=1,
                       total_steps=15, capacity=12, deterministic=deterministic),
             make_plan(num_captions=13, batch_size=4, rollout_batch_size=2, sync_interval=1, max_staleness=1,
                       total_steps=15, capacity=24, deterministic=deterministic)]
    seen: set[str] = set()
    for seed in range(12):
        seen |= {reason for reason, n in interleave(plans[seed % 2], seed).dropped.items() if n}
    # Deterministic tickets carry the exact version their planned step allows, and groups leave in stream order,
    # so none is ever too old: only a learner restart (rolled_back) or a fault drops one there.
    assert seen == {"rolled_back", "nonfinite", "orphaned"} | (set() if deterministic else {"stale"})
