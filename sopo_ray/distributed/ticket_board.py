"""`TicketBoard`: the replay queue's state machine, without Ray: tickets out, groups in, batches out, every group
counted. It applies `schedule.SchedulePlan` (read that module first: the rule and a worked example):

    claim     a ticket for a rollout worker when `blocked_reason()` is '' (the run still needs groups, the version
              the ticket needs is published, queued + in-flight groups fit the capacity); re-issued tickets first
    put       a ticket's groups come back: the finite ones are held together as one object (`hold`: the ReplayQueue
              `ray.put`s them, once per ticket), the others dropped ('nonfinite'); a delivery for a ticket that
              was re-issued meanwhile is 'orphaned', one for a crashed queue's incarnation 'queue_restart'
    take      a learner at (step, version) takes n groups: first every group it may not train is dropped ('stale',
              'rolled_back'), then n leave in arrival order (in stream order in deterministic mode); each is a
              (held object, index) pair, and an object lives on while any of its groups is queued or taken
    snapshot  the whole state as plain values; `restore` continues from it (in-flight tickets are re-issued)

Accounting invariant, checked by `stats()['accounting_ok']`: generated = consumed + dropped (by reason) + queued.
"""

from __future__ import annotations

from collections import Counter, deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from sopo_ray.distributed.group import RolloutGroup
from sopo_ray.distributed.schedule import SchedulePlan

DROP_REASONS = ("stale", "rolled_back", "nonfinite", "orphaned", "resume", "queue_restart")
"""Why a generated group was never trained (each counted in `queue/dropped_<reason>`)."""
RATE_WINDOW_S = 30.0
"""Groups in and out per second are measured over this many seconds."""


@dataclass
class Ticket:
    """One rollout batch: consecutive caption-stream positions sampled with one policy version."""

    ticket_id: int
    start: int
    """First caption-stream position."""
    caption_indices: list[int]
    """[n] rows of the caption table, one per position."""
    version: int
    """Policy version the groups need (at least this; exactly this in deterministic mode)."""
    target_step: int
    """Learner step the first group is planned for."""
    incarnation: int = 0
    """Queue incarnation that issued it (a restarted queue refuses deliveries for an older one)."""
    worker: str = ""
    """Who holds it (empty while it waits to be re-issued)."""
    claimed_at: float = 0.0
    """When `worker` claimed it (time.time())."""

    @property
    def size(self) -> int:
        return len(self.caption_indices)

    @property
    def positions(self) -> list[int]:
        """The stream positions it covers."""
        return list(range(self.start, self.start + self.size))


@dataclass
class QueuedGroup:
    """A delivered group waiting for a learner: where it sits in the stream and what sampled it."""

    position: int
    ticket: int
    version: int
    created_at: float
    payload: Any = None
    """The held object of the delivery it came in, shared by that delivery's finite groups (`TicketBoard.hold`:
    the ReplayQueue's object ref, one per ticket; by default the list of groups itself)."""
    index: int = 0
    """Its index among the groups `payload` holds."""


@dataclass
class BoardState:
    """Everything a `TicketBoard` needs to continue, as plain values (`to_state` / `from_state` for checkpoints,
    which are loaded with weights_only=True). Payloads are not part of it."""

    generated: int = 0
    consumed: int = 0
    dropped: dict[str, int] = field(default_factory=dict)
    staleness: dict[int, int] = field(default_factory=dict)
    """Trained groups by how many versions they were behind the learner."""
    next_position: int = 0
    next_ticket: int = 0
    cursor: int = 0
    """First stream position not yet delivered or dropped (deterministic delivery)."""
    resolved: list[int] = field(default_factory=list)
    """Positions past the cursor already delivered or dropped."""
    incarnation: int = 0
    learner_step: int = 0
    learner_version: int = 0
    taken_in_step: int = 0
    """Groups the learners took for `learner_step` so far (all ranks)."""
    reissue: list[Ticket] = field(default_factory=list)
    """Tickets to hand out again (in flight when the state was taken: regenerated identically from their seeds)."""
    queued: list[QueuedGroup] = field(default_factory=list)
    """Queued groups in position order (payloads not included)."""
    fifo: list[int] = field(default_factory=list)
    """Arrival order of the queued positions (non-deterministic delivery)."""

    def to_state(self) -> dict[str, Any]:
        ticket = ("ticket_id", "start", "caption_indices", "version", "target_step")
        return {**{k: getattr(self, k) for k in ("generated", "consumed", "next_position", "next_ticket", "cursor",
                                                  "incarnation", "learner_step", "learner_version", "taken_in_step")},
                "dropped": dict(self.dropped), "staleness": dict(self.staleness), "resolved": list(self.resolved),
                "reissue": [{k: getattr(t, k) for k in ticket} for t in self.reissue],
                "queued": [{"position": q.position, "ticket": q.ticket, "version": q.version,
                            "created_at": q.created_at} for q in self.queued],
                "fifo": list(self.fifo)}

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> BoardState:
        return cls(**{**state, "dropped": {str(k): int(v) for k, v in state["dropped"].items()},
                      "staleness": {int(k): int(v) for k, v in state["staleness"].items()},
                      "reissue": [Ticket(**t) for t in state["reissue"]],
                      "queued": [QueuedGroup(**q) for q in state["queued"]]})


class TicketBoard:
    """The replay queue's state machine: tickets out, groups in, batches out, every group counted.

    Callers hold whatever lock they need; no method blocks. Rollout side: `blocked_reason` / `claim`, `put`,
    `release`. Learner side: `learner_at`, `drop_unusable`, `deliverable`, `take`. Driver side: `close`,
    `snapshot` / `held` / `restore`, `stats`.

    `hold` turns the finite groups of one delivery (or of one ticket's queued groups on `restore`) into the one
    object the board keeps for them all; every queued group is that object and its index in it.
    """

    def __init__(self, plan: SchedulePlan, learner_version: int = 0, restoring: bool = False,
                 hold: Callable[[list[RolloutGroup]], Any] = list) -> None:
        self.plan, self.hold = plan, hold
        self.items: dict[int, QueuedGroup] = {}
        self.fifo: deque[int] = deque()
        self.inflight: dict[int, Ticket] = {}
        self.reissue: list[Ticket] = []
        self.resolved: set[int] = set()
        self.next_position = self.next_ticket = self.cursor = self.incarnation = 0
        self.learner_step, self.learner_version, self.taken_in_step = 0, learner_version, 0
        self.generated = self.consumed = self.nonfinite_in_row = 0
        self.dropped: Counter[str] = Counter()
        self.staleness: Counter[int] = Counter()
        self.closed = self.failure = ""
        self.restoring = restoring
        """True in a queue actor Ray restarted after a crash, until the driver restores its state."""
        self._puts: deque[tuple[float, int]] = deque()
        self._gets: deque[tuple[float, int]] = deque()

    # ------------------------------------------------------------------------------------------------
    # Rollout side
    # ------------------------------------------------------------------------------------------------

    def load(self) -> int:
        """Groups queued or being generated (what back-pressure bounds)."""
        return len(self.items) + sum(t.size for t in self.inflight.values())

    def projected(self) -> int:
        """How many groups the learners will have taken once everything queued, in flight or waiting to be
        re-issued is trained: the stream slot (in training order) of the next new ticket's first group."""
        return (self.learner_step * self.plan.batch_size + self.taken_in_step + self.load()
                + sum(t.size for t in self.reissue))

    def blocked_reason(self) -> str:
        """'' if a ticket can be handed out now, else why not: 'restarting', 'queue_full', 'staleness', 'done'."""
        if self.restoring:
            return "restarting"
        if self.reissue:
            return "" if self.load() + self.reissue[0].size <= self.plan.capacity else "queue_full"
        projected = self.projected()
        need = self.plan.total_groups - projected
        if need <= 0:
            return "done"
        size, _, version = self.plan.ticket_span(projected, need)
        if version > self.learner_version:
            return "staleness"
        if self.load() + size > self.plan.capacity:
            return "queue_full"
        return ""

    def claim(self, worker: str, now: float) -> Ticket:
        """The next ticket for `worker` (a re-issued one first); call only when `blocked_reason()` is ''."""
        if self.reissue:
            ticket = self.reissue.pop(0)
        else:
            projected = self.projected()
            size, step, version = self.plan.ticket_span(projected, self.plan.total_groups - projected)
            ticket = Ticket(self.next_ticket, self.next_position, self.plan.captions(self.next_position, size),
                            version, step)
            self.next_ticket += 1
            self.next_position += size
        ticket.worker, ticket.claimed_at, ticket.incarnation = worker, now, self.incarnation
        self.inflight[ticket.ticket_id] = ticket
        return ticket

    def put(self, worker: str, ticket_id: int, incarnation: int, groups: list[RolloutGroup], now: float,
            ) -> dict[str, int]:
        """Take in a ticket's groups, holding the finite ones as one object (`hold`); returns {'accepted': n, <drop
        reason>: n}. A delivery for a ticket its worker no longer holds (re-issued: 'orphaned') or for an older
        queue incarnation ('queue_restart') is dropped whole. After `plan.max_nonfinite_groups` groups with
        NaN/inf rewards in a row the board closes with a `failure`. A malformed group (`RolloutGroup.validate`)
        raises ValueError before anything changes."""
        for group in groups:
            group.validate()
        self.generated += len(groups)
        ticket = self.inflight.get(ticket_id)
        if ticket is None or ticket.worker != worker or incarnation != self.incarnation:
            reason = "queue_restart" if incarnation != self.incarnation else "orphaned"
            self.dropped[reason] += len(groups)
            return {"accepted": 0, reason: len(groups)}
        del self.inflight[ticket_id]
        kept = []
        for group in groups:
            if group.is_finite():
                self.nonfinite_in_row = 0
                kept.append(group)
            else:
                self._drop(group.position, "nonfinite")
                self.nonfinite_in_row += 1
        held = self.hold(kept) if kept else None
        for index, group in enumerate(kept):
            self.items[group.position] = QueuedGroup(group.position, ticket_id, group.policy_version, group.created_at,
                                                     held, index)
            self.fifo.append(group.position)
        self._puts.append((now, len(groups)))
        if self.nonfinite_in_row >= self.plan.max_nonfinite_groups and not self.closed:
            self.failure = (f"the reward was NaN/inf for {self.nonfinite_in_row} groups in a row (the last from "
                            f"{worker}, policy v{groups[-1].policy_version}); check the reward model and the "
                            "policy's samples, or raise faults.max_nonfinite_in_row")
            self.closed = "failed"
        return {"accepted": len(kept), "nonfinite": len(groups) - len(kept)}

    def release(self, worker: str) -> list[int]:
        """Give the in-flight tickets of a dead or replaced `worker` back for re-issue; returns their ids."""
        lost = [t for t in self.inflight.values() if t.worker == worker]
        for ticket in lost:
            del self.inflight[ticket.ticket_id]
            ticket.worker = ""
            self.reissue.append(ticket)
        self.reissue.sort(key=lambda t: t.ticket_id)
        return [t.ticket_id for t in lost]

    # ------------------------------------------------------------------------------------------------
    # Learner side
    # ------------------------------------------------------------------------------------------------

    def learner_at(self, step: int, version: int) -> None:
        """A learner asks for step `step` with policy `version` (a new step resets the step's taken count)."""
        if step != self.learner_step:
            self.learner_step, self.taken_in_step = step, 0
        self.learner_version = version

    def drop_unusable(self, learner_version: int) -> Counter[str]:
        """Drop every queued group a learner at `learner_version` may not train; returns the drops by reason."""
        dropped: Counter[str] = Counter()
        for position, item in list(self.items.items()):
            reason = self.plan.staleness_reason(item.version, learner_version)
            if reason is None:
                continue
            del self.items[position]
            if not self.plan.deterministic:
                self.fifo.remove(position)
            self._drop(position, reason)
            dropped[reason] += 1
        return dropped

    def deliverable(self, n: int) -> list[int]:
        """Up to n positions that may leave now: arrival order, or stream order from the cursor (deterministic)."""
        if not self.plan.deterministic:
            return list(self.fifo)[:n]
        out, p = [], self.cursor
        while len(out) < n:
            if p in self.items:
                out.append(p)
            elif p not in self.resolved:
                break
            p += 1
        return out

    def take(self, n: int, version: int, now: float) -> list[QueuedGroup]:
        """Hand `n` deliverable groups to a learner at `version` (call when `deliverable(n)` has n of them)."""
        positions = self.deliverable(n)
        items = [self.items.pop(p) for p in positions]
        for p in positions:
            self._resolve(p)
        if not self.plan.deterministic:
            for _ in positions:
                self.fifo.popleft()
        self.consumed += n
        self.taken_in_step += n
        self._gets.append((now, n))
        self.staleness.update(version - it.version for it in items)
        return items

    # ------------------------------------------------------------------------------------------------
    # Driver side
    # ------------------------------------------------------------------------------------------------

    def close(self, reason: str) -> None:
        """Hand out nothing more (the first reason stays)."""
        self.closed = self.closed or reason

    def stats(self, now: float) -> dict[str, Any]:
        """Accounting (generated, consumed, dropped by reason, queued, in flight, and whether they add up), ages,
        groups/s in and out, the staleness histogram of trained groups, back-pressure and learner position, and
        since when each worker holds its ticket (`claimed_at`)."""
        dropped = {r: int(self.dropped.get(r, 0)) for r in DROP_REASONS}
        ages = [now - it.created_at for it in self.items.values()]
        return {"size": len(self.items), "capacity": self.plan.capacity,
                "inflight": sum(t.size for t in self.inflight.values()) + sum(t.size for t in self.reissue),
                "generated": self.generated, "consumed": self.consumed, "dropped": dropped,
                "accounting_ok": self.generated == self.consumed + sum(dropped.values()) + len(self.items),
                "age_mean_s": sum(ages) / len(ages) if ages else 0.0, "age_max_s": max(ages, default=0.0),
                "in_per_s": _rate(self._puts, now), "out_per_s": _rate(self._gets, now),
                "staleness_hist": {int(k): int(v) for k, v in sorted(self.staleness.items())},
                "learner_step": self.learner_step, "learner_version": self.learner_version,
                "blocked": self.blocked_reason() if not self.closed else "closed",
                "next_position": self.next_position, "incarnation": self.incarnation, "restoring": self.restoring,
                "closed": self.closed, "failure": self.failure,
                "claimed_at": {t.worker: t.claimed_at for t in self.inflight.values()}}

    def snapshot(self) -> BoardState:
        """The whole state. In-flight tickets become tickets to re-issue: their groups will be regenerated
        identically from the same seeds, so nothing is lost or duplicated across a resume."""
        order = sorted(self.items)
        return BoardState(
            generated=self.generated, consumed=self.consumed, dropped=dict(self.dropped),
            staleness=dict(self.staleness), next_position=self.next_position, next_ticket=self.next_ticket,
            cursor=self.cursor, resolved=sorted(self.resolved), incarnation=self.incarnation,
            learner_step=self.learner_step, learner_version=self.learner_version, taken_in_step=self.taken_in_step,
            reissue=[Ticket(t.ticket_id, t.start, list(t.caption_indices), t.version, t.target_step)
                     for t in sorted([*self.inflight.values(), *self.reissue], key=lambda t: t.ticket_id)],
            queued=[QueuedGroup(p, self.items[p].ticket, self.items[p].version, self.items[p].created_at)
                    for p in order],
            fifo=list(self.fifo))

    def held(self) -> list[tuple[Any, int]]:
        """(held object, index) of every queued group, in position order (as `snapshot().queued`)."""
        return [(self.items[p].payload, self.items[p].index) for p in sorted(self.items)]

    def restore(self, state: BoardState, groups: Iterable[RolloutGroup] | None, drop_reason: str = "resume",
                ) -> None:
        """Continue from `state`. `groups` are the queued groups (position order), held again one object per
        ticket; None drops them, counted under `drop_reason` ('resume' when a checkpoint skips them,
        'queue_restart' after a crash, which also starts a new incarnation so that deliveries for the crashed one
        are refused)."""
        self.generated, self.consumed = state.generated, state.consumed
        self.dropped, self.staleness = Counter(state.dropped), Counter(state.staleness)
        self.next_position, self.next_ticket = state.next_position, state.next_ticket
        self.cursor, self.resolved = state.cursor, set(state.resolved)
        self.incarnation = state.incarnation + (1 if drop_reason == "queue_restart" else 0)
        self.learner_step, self.learner_version = state.learner_step, state.learner_version
        self.taken_in_step = state.taken_in_step
        self.reissue = [Ticket(t.ticket_id, t.start, list(t.caption_indices), t.version, t.target_step,
                               self.incarnation) for t in state.reissue]
        self.inflight, self.items, self.fifo = {}, {}, deque()
        if groups is None:
            for queued in state.queued:
                self._drop(queued.position, drop_reason)
        else:
            by_ticket: dict[int, list[tuple[QueuedGroup, RolloutGroup]]] = {}
            for queued, group in zip(state.queued, groups, strict=True):
                by_ticket.setdefault(queued.ticket, []).append((queued, group))
            for entries in by_ticket.values():
                held = self.hold([group for _, group in entries])
                for index, (queued, _) in enumerate(entries):
                    self.items[queued.position] = QueuedGroup(queued.position, queued.ticket, queued.version,
                                                              queued.created_at, held, index)
            self.fifo = deque(p for p in state.fifo if p in self.items)
        self.restoring = False

    # ------------------------------------------------------------------------------------------------
    # Internals
    # ------------------------------------------------------------------------------------------------

    def _drop(self, position: int, reason: str) -> None:
        self.dropped[reason] += 1
        self._resolve(position)

    def _resolve(self, position: int) -> None:
        """Mark a position as gone (delivered or dropped) and advance the stream-order cursor past resolved ones."""
        self.resolved.add(position)
        while self.cursor in self.resolved:
            self.resolved.discard(self.cursor)
            self.cursor += 1


def _rate(events: deque[tuple[float, int]], now: float) -> float:
    """Groups per second over the last RATE_WINDOW_S of (time, groups) events (older ones are forgotten)."""
    while events and now - events[0][0] > RATE_WINDOW_S:
        events.popleft()
    if not events:
        return 0.0
    return sum(n for _, n in events) / max(now - events[0][0], 1.0)
