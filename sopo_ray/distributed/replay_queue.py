"""`ReplayQueue`: the bounded, versioned buffer between the rollout pool and the learners (a Ray actor).

It hands out work and takes in results:
- `claim` gives a rollout worker a `Ticket` (captions + policy version) when the schedule allows one: the run still
  needs groups, the version the ticket needs is published, and queued + in-flight groups fit `capacity`.
  Otherwise the worker waits, and the reason ('queue_full', 'staleness', 'done') is its back-pressure.
- `put` stores a ticket's groups (each as an object-store ref this actor owns, so a dead worker loses nothing
  already delivered); groups with NaN/inf rewards are dropped as 'nonfinite', and after
  `plan.max_nonfinite_groups` of them in a row the queue closes with a `failure` message (a broken reward model
  would otherwise be re-sampled forever while the learner waits).
- `get_batch` gives a learner rank `n` groups that its policy version may train on; older ones are dropped as
  'stale' (or 'rolled_back' after a learner restart). In deterministic mode groups leave in stream order.
Every group is accounted for: generated = consumed + dropped (by reason) + in queue. `snapshot`/`restore` carry
the whole state (queued groups, in-flight tickets to re-issue, counters) through a checkpoint.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import ray

from sopo_ray.distributed.group import RolloutGroup
from sopo_ray.distributed.schedule import SchedulePlan

DROP_REASONS = ("stale", "rolled_back", "nonfinite", "orphaned", "resume", "queue_restart")
_RATE_WINDOW_S = 30.0


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
    epoch: int = 0
    """Queue incarnation that issued it (a restarted queue refuses tickets of an older one)."""
    worker: str = ""
    claimed_at: float = 0.0

    @property
    def size(self) -> int:
        return len(self.caption_indices)


@dataclass
class ClaimReply:
    """`status` is 'ticket' (work to do), 'wait' (back-pressure, see `reason`) or 'closed' (stop)."""

    status: str
    ticket: Ticket | None = None
    reason: str = ""


@dataclass
class BatchReply:
    """`status` is 'ok' (`groups` holds n refs to RolloutGroup), 'timeout' or 'closed'."""

    status: str
    groups: list[Any] = field(default_factory=list)
    versions: list[int] = field(default_factory=list)
    dropped: dict[str, int] = field(default_factory=dict)


@dataclass
class _Queued:
    position: int
    ticket: int
    version: int
    created_at: float
    ref: Any


class ReplayQueue:
    """Bounded, versioned rollout buffer and ticket board; run it as an async actor with num_cpus=0."""

    def __init__(self, plan: SchedulePlan, tau: float, learner_version: int = 0) -> None:
        self.plan = plan
        self.tau = tau
        self._cond = asyncio.Condition()
        self._items: dict[int, _Queued] = {}
        self._fifo: deque[int] = deque()
        self._inflight: dict[int, Ticket] = {}
        self._reissue: list[Ticket] = []
        self._next_position = 0
        self._next_ticket = 0
        self._cursor = 0
        self._resolved: set[int] = set()
        self._epoch = 0
        self._learner_step = 0
        self._learner_version = learner_version
        self._taken_in_step = 0
        self._generated = 0
        self._consumed = 0
        self._dropped: Counter[str] = Counter()
        self._staleness: Counter[int] = Counter()
        self._recent: deque[tuple[float, float, float]] = deque(maxlen=max(64, 4 * plan.batch_size))
        self._puts: deque[tuple[float, int]] = deque()
        self._gets: deque[tuple[float, int]] = deque()
        self._workers: dict[str, dict[str, Any]] = {}
        self._closed = ""
        self._failure = ""
        self._nonfinite_in_row = 0
        self._restoring = ray.get_runtime_context().was_current_actor_reconstructed

    # ------------------------------------------------------------------------------------------------
    # Rollout side
    # ------------------------------------------------------------------------------------------------

    async def claim(self, worker: str, worker_stats: dict[str, Any] | None = None,
                    timeout: float = 1.0) -> ClaimReply:
        """A ticket for `worker`, or why there is none yet (waits up to `timeout` seconds for one)."""
        self._note_worker(worker, worker_stats, state="waiting")
        reason = ""

        def ready() -> bool:
            nonlocal reason
            if self._closed:
                return True
            reason = self._blocked_reason()
            return not reason

        async with self._cond:
            try:
                await asyncio.wait_for(self._cond.wait_for(ready), timeout)
            except TimeoutError:
                return ClaimReply("wait", reason=reason)
            if self._closed:
                return ClaimReply("closed", reason=self._closed)
            ticket = self._reissue.pop(0) if self._reissue else self._new_ticket()
            ticket.worker, ticket.claimed_at, ticket.epoch = worker, time.time(), self._epoch
            self._inflight[ticket.ticket_id] = ticket
            self._note_worker(worker, None, state="generating", version=ticket.version, ticket=ticket.ticket_id)
            return ClaimReply("ticket", ticket)

    async def put(self, worker: str, ticket_id: int, epoch: int, groups: list[RolloutGroup],
                  worker_stats: dict[str, Any] | None = None) -> dict[str, int]:
        """Store a ticket's groups; returns {'accepted': n, <drop reason>: n}."""
        async with self._cond:
            await self._cond.wait_for(lambda: not self._restoring)
            self._generated += len(groups)
            ticket = self._inflight.get(ticket_id)
            self._note_worker(worker, worker_stats, state="delivered")
            if ticket is None or ticket.worker != worker or epoch != self._epoch:
                reason = "queue_restart" if epoch != self._epoch else "orphaned"
                self._dropped[reason] += len(groups)
                return {"accepted": 0, reason: len(groups)}
            del self._inflight[ticket_id]
            now = time.time()
            out = {"accepted": 0, "nonfinite": 0}
            for group in groups:
                group.validate()
                self._recent.append((group.reward_l, float(np.mean(group.rewards)), group.reward_best))
                if not group.is_finite():
                    self._drop(group.position, "nonfinite")
                    out["nonfinite"] += 1
                    self._nonfinite_in_row += 1
                    continue
                self._nonfinite_in_row = 0
                self._items[group.position] = _Queued(group.position, ticket_id, group.policy_version,
                                                      group.created_at, ray.put(group))
                self._fifo.append(group.position)
                out["accepted"] += 1
            self._puts.append((now, len(groups)))
            if self._nonfinite_in_row >= self.plan.max_nonfinite_groups and not self._closed:
                self._failure = (f"the reward was NaN/inf for {self._nonfinite_in_row} groups in a row (the last from "
                                 f"{worker}, policy v{groups[-1].policy_version}); check the reward model and the "
                                 "policy's samples, or raise faults.max_nonfinite_in_row")
                self._closed = "failed"
            self._cond.notify_all()
            return out

    async def release_worker(self, worker: str) -> list[int]:
        """Give the in-flight tickets of a dead or replaced `worker` back for re-issue; returns their ids."""
        async with self._cond:
            lost = [t for t in self._inflight.values() if t.worker == worker]
            for ticket in lost:
                del self._inflight[ticket.ticket_id]
                ticket.worker = ""
                self._reissue.append(ticket)
            self._reissue.sort(key=lambda t: t.ticket_id)
            self._workers.pop(worker, None)
            self._cond.notify_all()
            return [t.ticket_id for t in lost]

    # ------------------------------------------------------------------------------------------------
    # Learner side
    # ------------------------------------------------------------------------------------------------

    async def get_batch(self, step: int, version: int, n: int, timeout: float = 5.0) -> BatchReply:
        """`n` groups a learner at `step` with policy `version` may train on (waits up to `timeout` s)."""
        async with self._cond:
            if step != self._learner_step:
                self._learner_step, self._taken_in_step = step, 0
            self._learner_version = version
            self._cond.notify_all()
            dropped: Counter[str] = Counter()

            def ready() -> bool:
                if self._restoring:
                    return False
                dropped.update(self._drop_unusable(version))
                return bool(self._closed) or len(self._deliverable(n)) >= n

            try:
                await asyncio.wait_for(self._cond.wait_for(ready), timeout)
            except TimeoutError:
                return BatchReply("timeout", dropped=dict(dropped))
            if self._closed:
                return BatchReply("closed", dropped=dict(dropped))
            positions = self._deliverable(n)
            items = [self._items.pop(p) for p in positions]
            for p in positions:
                self._resolve(p)
            if not self.plan.deterministic:
                for _ in positions:
                    self._fifo.popleft()
            self._consumed += n
            self._taken_in_step += n
            self._gets.append((time.time(), n))
            self._staleness.update(version - it.version for it in items)
            self._cond.notify_all()
            return BatchReply("ok", [it.ref for it in items], [it.version for it in items], dict(dropped))

    # ------------------------------------------------------------------------------------------------
    # Driver side
    # ------------------------------------------------------------------------------------------------

    async def close(self, reason: str = "stop") -> None:
        """Stop handing out tickets and batches; every waiting call returns 'closed' (the first reason stays)."""
        async with self._cond:
            self._closed = self._closed or reason
            self._cond.notify_all()

    async def stats(self) -> dict[str, Any]:
        """Size, age, throughput, counters, back-pressure state and per-worker status (cheap; poll it)."""
        now = time.time()
        ages = [now - it.created_at for it in self._items.values()]
        recent = np.array(self._recent, dtype=np.float64).reshape(-1, 3)
        finite = recent[np.isfinite(recent).all(axis=1)]
        dropped = {r: int(self._dropped.get(r, 0)) for r in DROP_REASONS}
        in_queue = len(self._items)
        return {
            "size": in_queue, "capacity": self.plan.capacity,
            "inflight": sum(t.size for t in self._inflight.values()) + sum(t.size for t in self._reissue),
            "generated": self._generated, "consumed": self._consumed, "dropped": dropped,
            "accounting_ok": self._generated == self._consumed + sum(dropped.values()) + in_queue,
            "age_mean_s": float(np.mean(ages)) if ages else 0.0, "age_max_s": float(max(ages, default=0.0)),
            "in_per_s": self._rate(self._puts, now), "out_per_s": self._rate(self._gets, now),
            "reward_l_mean": float(finite[:, 0].mean()) if len(finite) else float("nan"),
            "reward_mean": float(finite[:, 1].mean()) if len(finite) else float("nan"),
            "reward_best_mean": float(finite[:, 2].mean()) if len(finite) else float("nan"),
            "frac_below_tau": float((finite[:, 0] < self.tau).mean()) if len(finite) else float("nan"),
            "staleness_hist": {int(k): int(v) for k, v in sorted(self._staleness.items())},
            "learner_step": self._learner_step, "learner_version": self._learner_version,
            "blocked": self._blocked_reason() if not self._closed else "closed",
            "next_position": self._next_position, "epoch": self._epoch, "restoring": self._restoring,
            "closed": self._closed, "failure": self._failure, "now": now,
            "workers": {k: dict(v) for k, v in self._workers.items()},
        }

    async def snapshot(self, with_refs: bool = True) -> dict[str, Any]:
        """The full state as plain values plus `refs` ([ref] lists of queued groups, in position order).

        In-flight tickets are saved as tickets to re-issue: their groups will be regenerated identically from
        the same seeds, so nothing is lost or duplicated across a resume.
        """
        order = sorted(self._items)
        tickets = sorted(list(self._inflight.values()) + self._reissue, key=lambda t: t.ticket_id)
        return {
            "counters": {"generated": self._generated, "consumed": self._consumed, "dropped": dict(self._dropped),
                         "staleness": dict(self._staleness)},
            "next_position": self._next_position, "next_ticket": self._next_ticket, "cursor": self._cursor,
            "resolved": sorted(self._resolved), "epoch": self._epoch,
            "learner": [self._learner_step, self._learner_version, self._taken_in_step],
            "reissue": [[t.ticket_id, t.start, list(t.caption_indices), t.version, t.target_step] for t in tickets],
            "queued": [[p, self._items[p].ticket, self._items[p].version, self._items[p].created_at] for p in order],
            "fifo": list(self._fifo),
            "refs": [[self._items[p].ref] for p in order] if with_refs else [],
        }

    async def restore(self, state: dict[str, Any], groups: list[RolloutGroup] | None, drop_reason: str = "resume",
                      ) -> dict[str, int]:
        """Load a `snapshot` state. `groups` are the queued groups' payloads (position order); None drops them,
        counted under `drop_reason` ('resume' when a checkpoint skips them, 'queue_restart' after a crash)."""
        async with self._cond:
            c = state["counters"]
            self._generated, self._consumed = int(c["generated"]), int(c["consumed"])
            self._dropped = Counter({k: int(v) for k, v in c["dropped"].items()})
            self._staleness = Counter({int(k): int(v) for k, v in c["staleness"].items()})
            self._next_position, self._next_ticket = int(state["next_position"]), int(state["next_ticket"])
            self._cursor, self._resolved = int(state["cursor"]), set(state["resolved"])
            self._epoch = int(state["epoch"]) + (1 if drop_reason == "queue_restart" else 0)
            self._learner_step, self._learner_version, self._taken_in_step = (int(x) for x in state["learner"])
            self._reissue = [Ticket(i, s, list(ci), v, ts, self._epoch) for i, s, ci, v, ts in state["reissue"]]
            self._inflight, self._items, self._fifo = {}, {}, deque()
            if groups is None:
                for position, *_ in state["queued"]:
                    self._drop(int(position), drop_reason)
            else:
                for (position, ticket, version, created), group in zip(state["queued"], groups, strict=True):
                    self._items[int(position)] = _Queued(int(position), int(ticket), int(version), float(created),
                                                         ray.put(group))
                self._fifo = deque(p for p in state["fifo"] if p in self._items)
            self._restoring = False
            self._cond.notify_all()
            return {"queued": len(self._items), "reissue": len(self._reissue)}

    # ------------------------------------------------------------------------------------------------
    # Internals (called with the condition held)
    # ------------------------------------------------------------------------------------------------

    def _load(self) -> int:
        """Groups queued or being generated (what back-pressure bounds)."""
        return len(self._items) + sum(t.size for t in self._inflight.values())

    def _projected(self) -> int:
        """Groups the learner will have taken before the next new ticket's first group (its stream slot)."""
        return (self._learner_step * self.plan.batch_size + self._taken_in_step + self._load()
                + sum(t.size for t in self._reissue))

    def _blocked_reason(self) -> str:
        """'' if a ticket can be handed out now, else why not."""
        if self._restoring:
            return "restarting"
        if self._reissue:
            return "" if self._load() + self._reissue[0].size <= self.plan.capacity else "queue_full"
        projected = self._projected()
        need = self.plan.total_groups - projected
        if need <= 0:
            return "done"
        size, _, version = self.plan.ticket_span(projected, need)
        if version > self._learner_version:
            return "staleness"
        if self._load() + size > self.plan.capacity:
            return "queue_full"
        return ""

    def _new_ticket(self) -> Ticket:
        projected = self._projected()
        size, step, version = self.plan.ticket_span(projected, self.plan.total_groups - projected)
        start = self._next_position
        ticket = Ticket(self._next_ticket, start, self.plan.captions(start, size), version, step, self._epoch)
        self._next_ticket += 1
        self._next_position += size
        return ticket

    def _deliverable(self, n: int) -> list[int]:
        """Up to n positions that may leave now: arrival order, or stream order from the cursor (deterministic)."""
        if not self.plan.deterministic:
            return list(self._fifo)[:n]
        out, p = [], self._cursor
        while len(out) < n:
            if p in self._items:
                out.append(p)
            elif p not in self._resolved:
                break
            p += 1
        return out

    def _drop_unusable(self, learner_version: int) -> Counter[str]:
        dropped: Counter[str] = Counter()
        for p in [p for p, it in self._items.items()
                  if self.plan.staleness_reason(it.version, learner_version) is not None]:
            reason = self.plan.staleness_reason(self._items.pop(p).version, learner_version)
            if not self.plan.deterministic:
                self._fifo.remove(p)
            self._drop(p, reason)
            dropped[reason] += 1
        return dropped

    def _drop(self, position: int, reason: str) -> None:
        self._dropped[reason] += 1
        self._resolve(position)

    def _resolve(self, position: int) -> None:
        """Mark a position as gone (delivered or dropped) and advance the stream-order cursor past resolved ones."""
        self._resolved.add(position)
        while self._cursor in self._resolved:
            self._resolved.discard(self._cursor)
            self._cursor += 1

    def _note_worker(self, worker: str, worker_stats: dict[str, Any] | None, state: str, **extra: Any) -> None:
        info = self._workers.setdefault(worker, {"state": state, "since": time.time()})
        if info["state"] != state:
            info["state"], info["since"] = state, time.time()
        info["last_seen"] = time.time()
        info.update(extra)
        if worker_stats:
            info.update(worker_stats)

    @staticmethod
    def _rate(events: deque[tuple[float, int]], now: float) -> float:
        while events and now - events[0][0] > _RATE_WINDOW_S:
            events.popleft()
        if not events:
            return 0.0
        return sum(n for _, n in events) / max(now - events[0][0], 1.0)
