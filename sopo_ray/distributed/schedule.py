"""The semi-online schedule in one place, without Ray: the rule (`SchedulePlan`) and its enforcement (`TicketBoard`).

The paper's two numbers are `sync_interval` (learner steps per policy version) and `max_staleness` (how many
versions old a trained group may be). Everything else here follows from them:

- The learner trains step s with the policy of version `version_at(s) = s // sync_interval`; it publishes version
  v + 1 after its (v + 1) * sync_interval-th optimizer step.
- The *caption stream* is the run's infinite sequence of train captions (one seeded permutation per caption
  epoch, `seeds.caption_order`); stream position p is one group to generate, trained at step p // batch_size.
- A *ticket* is one rollout batch: consecutive stream positions inside one sync window, so they share one policy
  version. A ticket for step s needs `required_version(s) = max(0, version_at(s) - max_staleness)`; it is issued
  only once that version is published ('staleness' otherwise) and only while queued + in-flight groups stay within
  `capacity = (rollout_ahead + 1) * batch_size` ('queue_full' otherwise): that is the back-pressure.
- A group whose version is older than `learner_version - max_staleness` when a learner asks for it is dropped
  ('stale'); one newer than the learner ('rolled_back') exists only after a learner restarted from an older
  checkpoint. Every group is accounted for: generated = consumed + dropped (by reason) + queued.
- In deterministic mode a ticket is sampled with exactly its required version and groups leave in stream order,
  so what each step trains on does not depend on timing. Otherwise workers use the newest weights.

Worked example (batch_size 4, sync_interval 2, max_staleness 0, rollout_batch_size 4, rollout_ahead 1: capacity 8).
Window 0 is steps 0-1 = positions 0-7, version 0. Tickets [0, 4) and [4, 8) go out at once (8 groups = capacity).
The ticket at position 8 is for step 2, which trains with version 1: it waits ('staleness') until the learner
has published version 1, i.e. finished step 1; with max_staleness 1 it could go out with version 0 as soon as the
learner had taken positions 0-3 (room under capacity), and its groups would be 1 version old at step 2.

`SchedulePlan` holds these numbers; `ticket_board.TicketBoard` is the state machine that applies them (the replay
queue's whole logic: the `ReplayQueue` actor only adds the waiting, the object refs and the clock). Both are plain
Python, so the schedule is unit-tested without Ray (tests/test_schedule.py).
"""

from __future__ import annotations

from dataclasses import dataclass

from sopo_ray.config import Config
from sopo_ray.distributed.seeds import stream_captions


@dataclass(frozen=True)
class SchedulePlan:
    """The numbers the replay queue, rollout workers and learners agree on for one run."""

    num_captions: int
    """Captions in the train split (length of one epoch of the caption stream)."""
    batch_size: int
    """Groups per learner step, all ranks together."""
    rollout_batch_size: int
    """Most captions in one ticket."""
    sync_interval: int
    """Learner steps per policy version."""
    max_staleness: int
    """Oldest policy a trained group may come from, in versions behind the learner."""
    total_steps: int
    """Learner steps of the run."""
    capacity: int
    """Most groups queued plus in flight (back-pressure)."""
    seed: int
    """Run seed (caption order)."""
    deterministic: bool
    """Exact versions and stream-order delivery (reproducible runs)."""
    max_nonfinite_groups: int = 1 << 30
    """Groups with NaN/inf rewards in a row that end the run (`faults.max_nonfinite_in_row` steps' worth)."""

    @classmethod
    def from_config(cls, cfg: Config, num_captions: int) -> SchedulePlan:
        """The plan of `cfg` for a train split with `num_captions` captions."""
        s = cfg.schedule
        capacity = (s.rollout_ahead + 1) * s.batch_size
        return cls(num_captions=num_captions, batch_size=s.batch_size,
                   rollout_batch_size=min(s.rollout_batch_size, capacity), sync_interval=s.sync_interval,
                   max_staleness=s.max_staleness, total_steps=s.total_steps, capacity=capacity, seed=cfg.seed,
                   deterministic=cfg.deterministic, max_nonfinite_groups=cfg.faults.max_nonfinite_in_row * s.batch_size)

    @property
    def total_groups(self) -> int:
        """Groups the learner trains on over the whole run."""
        return self.total_steps * self.batch_size

    @property
    def kept_versions(self) -> int:
        """Policy versions the weight store keeps: every version a ticket may still need (max_staleness + 1) and a
        margin for workers that start a batch just before a publish."""
        return self.max_staleness + 3

    @property
    def max_busy_workers(self) -> int:
        """Most tickets in flight at once, so the most rollout workers that can be busy: the versions a ticket may
        wait for span `(max_staleness + 1) * sync_interval` learner steps, the queue holds `capacity` groups, and
        tickets end at sync windows. Workers beyond this number wait (back-pressure 'staleness' or 'queue_full')."""
        limit = min((self.max_staleness + 1) * self.sync_interval * self.batch_size, self.capacity, self.total_groups)
        start = tickets = 0
        while start < limit:
            start += self.ticket_span(start, limit - start)[0]
            tickets += 1
        return max(1, tickets)

    def version_at(self, step: int) -> int:
        """Policy version the learner trains with at step `step` (0-based); also the version it holds after
        `step` applied steps."""
        return step // self.sync_interval

    def required_version(self, step: int) -> int:
        """Oldest policy version whose groups may be trained at step `step`."""
        return max(0, self.version_at(step) - self.max_staleness)

    def staleness_reason(self, group_version: int, learner_version: int) -> str | None:
        """Why a group may not be trained by a learner at `learner_version` ('stale', 'rolled_back'), or None.

        'rolled_back': the group came from a version newer than the learner's, which happens only after the
        learner restarted from an older checkpoint; those weights no longer exist.
        """
        if group_version < learner_version - self.max_staleness:
            return "stale"
        if group_version > learner_version:
            return "rolled_back"
        return None

    def ticket_span(self, effective_start: int, need: int) -> tuple[int, int, int]:
        """(size, target step, version) of a ticket whose first group is the `effective_start`-th still to train.

        The ticket stops at the end of the sync window of its first group, so all its groups share one version,
        and never covers more than `need` groups (what the run still needs) or `rollout_batch_size`.
        """
        step = effective_start // self.batch_size
        window_end = (self.version_at(step) + 1) * self.sync_interval * self.batch_size
        size = max(0, min(self.rollout_batch_size, window_end - effective_start, need))
        return size, step, self.required_version(step)

    def captions(self, start: int, size: int) -> list[int]:
        """Caption indices at stream positions [start, start + size)."""
        return stream_captions(self.seed, self.num_captions, start, size)
