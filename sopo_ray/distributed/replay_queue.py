"""`ReplayQueue`: the bounded, versioned buffer between the rollout pool and the learners (a Ray actor).

A thin async shell over `ticket_board.TicketBoard`, which holds the whole schedule and its accounting. The shell
adds three things the board leaves out: waiting (a claim or a batch waits on an asyncio condition up to a timeout
for the board to allow it), ownership and the clock.

Ownership, one object per ticket: the finite groups of a delivered ticket are `ray.put` by this actor as one
object (`hold`), so a rollout worker that dies loses nothing it delivered and the groups sit in this actor's node's
object store. A learner gets `HeldGroups`: the refs of the ticket objects its groups are in, each once, and each
group's index there; `HeldGroups.fetch` gets every object once and picks the groups. An object lives while the
board still queues one of its groups or a learner holds its ref: a ticket partly taken (or partly dropped as
non-finite: those are never stored) keeps its object until its last group is gone, and a learner rank that takes
part of a ticket fetches all of it. Per group instead of per ticket, the queue spent 2-3x the CPU per group and
moved a third to two thirds of the groups per second (docs/scaling.md, section 2.2).

    rollout worker   claim(worker) -> Claim(OK, ticket) | Claim(WAIT, reason) | Claim(CLOSED)
                     put(worker, ticket_id, incarnation, groups)
    learner rank     get_batch(step, version, n) -> Batch(OK, groups, versions, dropped) | Batch(WAIT) | Batch(CLOSED)
    driver           release_worker, close, stats, snapshot / restore (resume, and recovery after the queue crashed)
"""

from __future__ import annotations

import asyncio
import time
import warnings
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

import ray

from sopo_ray.distributed.group import RolloutGroup
from sopo_ray.distributed.schedule import SchedulePlan
from sopo_ray.distributed.ticket_board import BoardState, Ticket, TicketBoard


class Status(Enum):
    """What a claim or a batch request got."""

    OK = "ok"
    """A ticket to serve, or the n groups asked for."""
    WAIT = "wait"
    """Nothing yet: back-pressure for a claim (see `Claim.reason`), a timeout for a batch; ask again."""
    CLOSED = "closed"
    """The queue closed (the run ends or failed): stop."""


@dataclass
class Claim:
    """A rollout worker's answer: a ticket, or why there is none."""

    status: Status
    ticket: Ticket | None = None
    reason: str = ""
    """WAIT: the back-pressure reason ('queue_full', 'staleness', 'done', 'restarting'); CLOSED: why it closed."""


@dataclass
class HeldGroups:
    """Groups in the queue's ticket objects: group i is element `slots[i][1]` of the object `refs[slots[i][0]]`."""

    refs: list[Any] = field(default_factory=list)
    """Object refs (owned by the queue) of ticket objects, each a list of groups; each ref once."""
    slots: list[tuple[int, int]] = field(default_factory=list)
    """Per group, in order: (index into `refs`, index into that object's list)."""

    @classmethod
    def of(cls, held: Iterable[tuple[Any, int]]) -> HeldGroups:
        """From (ref, index) pairs, as the board holds its groups."""
        first: dict[Any, int] = {}
        slots = [(first.setdefault(ref, len(first)), index) for ref, index in held]
        return cls(list(first), slots)

    def __len__(self) -> int:
        return len(self.slots)

    def pick(self, objects: list[list[RolloutGroup]]) -> list[RolloutGroup]:
        """The groups, given the objects of `refs` (in the order of `refs`)."""
        return [objects[ref][index] for ref, index in self.slots]

    def fetch(self) -> list[RolloutGroup]:
        """`ray.get` every object once and pick the groups."""
        return self.pick(ray.get(self.refs))


@dataclass
class Batch:
    """A learner rank's answer: n groups (in ticket objects the queue owns) with their policy versions."""

    status: Status
    groups: HeldGroups = field(default_factory=HeldGroups)
    versions: list[int] = field(default_factory=list)
    dropped: dict[str, int] = field(default_factory=dict)
    """Groups dropped while this request waited, by reason."""


@dataclass
class QueueSnapshot:
    """The board's state and its queued groups (position order; empty when not asked for)."""

    state: BoardState
    groups: HeldGroups


class ReplayQueue:
    """A `TicketBoard` behind an asyncio condition; run it as an async actor with num_cpus=0."""

    def __init__(self, plan: SchedulePlan, learner_version: int = 0) -> None:
        with warnings.catch_warnings():  # Ray's own property reads its deprecated `actor_id` and warns about it
            warnings.simplefilter("ignore", DeprecationWarning)
            restarted = ray.get_runtime_context().was_current_actor_reconstructed
        self.board = TicketBoard(plan, learner_version, restoring=restarted, hold=self.hold)
        self._cond = asyncio.Condition()

    def hold(self, groups: list[RolloutGroup]) -> Any:
        """What the board keeps for one ticket's finite groups: one object this actor owns."""
        return ray.put(groups)

    def handout(self, held: list[tuple[Any, int]]) -> HeldGroups:
        """Groups the board holds, as (held object, index) pairs, the way a learner or a snapshot gets them."""
        return HeldGroups.of(held)

    async def claim(self, worker: str, timeout: float = 1.0) -> Claim:
        """A ticket for `worker`, or why there is none yet (waits up to `timeout` seconds for one)."""
        reason = ""

        def ready() -> bool:
            nonlocal reason
            if self.board.closed:
                return True
            reason = self.board.blocked_reason()
            return not reason

        async with self._cond:
            try:
                await asyncio.wait_for(self._cond.wait_for(ready), timeout)
            except TimeoutError:
                return Claim(Status.WAIT, reason=reason)
            if self.board.closed:
                return Claim(Status.CLOSED, reason=self.board.closed)
            return Claim(Status.OK, self.board.claim(worker, time.time()))

    async def put(self, worker: str, ticket_id: int, incarnation: int, groups: list[RolloutGroup]) -> dict[str, int]:
        """Store a ticket's groups (one object this actor owns); returns {'accepted': n, <drop reason>: n}."""
        async with self._cond:
            await self._cond.wait_for(lambda: not self.board.restoring)
            out = self.board.put(worker, ticket_id, incarnation, groups, time.time())
            self._cond.notify_all()
            return out

    async def release_worker(self, worker: str) -> list[int]:
        """Give the in-flight tickets of a dead or replaced `worker` back for re-issue; returns their ids."""
        async with self._cond:
            lost = self.board.release(worker)
            self._cond.notify_all()
            return lost

    async def get_batch(self, step: int, version: int, n: int, timeout: float = 5.0) -> Batch:
        """`n` groups a learner at `step` with policy `version` may train on (waits up to `timeout` s)."""
        async with self._cond:
            self.board.learner_at(step, version)
            self._cond.notify_all()
            dropped: Counter[str] = Counter()

            def ready() -> bool:
                if self.board.restoring:
                    return False
                dropped.update(self.board.drop_unusable(version))
                return bool(self.board.closed) or len(self.board.deliverable(n)) >= n

            try:
                await asyncio.wait_for(self._cond.wait_for(ready), timeout)
            except TimeoutError:
                return Batch(Status.WAIT, dropped=dict(dropped))
            if self.board.closed:
                return Batch(Status.CLOSED, dropped=dict(dropped))
            items = self.board.take(n, version, time.time())
            self._cond.notify_all()
            held = self.handout([(it.payload, it.index) for it in items])
            return Batch(Status.OK, held, [it.version for it in items], dict(dropped))

    async def close(self, reason: str = "stop") -> None:
        """Stop handing out tickets and batches; every waiting call returns CLOSED (the first reason stays)."""
        async with self._cond:
            self.board.close(reason)
            self._cond.notify_all()

    async def stats(self) -> dict[str, Any]:
        """`TicketBoard.stats` now (cheap; poll it)."""
        now = time.time()
        return {**self.board.stats(now), "now": now}

    async def snapshot(self, with_refs: bool = True) -> QueueSnapshot:
        """The board's state, with its queued groups when `with_refs`."""
        return QueueSnapshot(self.board.snapshot(), self.handout(self.board.held() if with_refs else []))

    async def restore(self, state: BoardState, groups: list[RolloutGroup] | None, drop_reason: str = "resume",
                      ) -> dict[str, int]:
        """Continue from `state` (`TicketBoard.restore`); `groups` are the queued groups' payloads in position
        order, None drops them (counted under `drop_reason`)."""
        async with self._cond:
            self.board.restore(state, groups, drop_reason)
            self._cond.notify_all()
            return {"queued": len(self.board.items), "reissue": len(self.board.reissue)}
