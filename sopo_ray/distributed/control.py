"""`RunControl`: what the driver says to the run and hears from it (a small Ray actor, no tensors).

- Status: the learners' final word (`set_status`: done / stopped / failed with a message) and the stop flag the
  driver raises on Ctrl-C or a failure elsewhere (`request_stop`); the learners read it before every step.
- Learner restarts: every learner start and every failure Ray Train reports, so `health/learner_restarts` counts
  each restart of the learner group, also one that failed before its learners registered.
- Inbox: the learners' step records (`report` / `drain`) and the rollout workers' reports (`worker_report`: their
  counters, and r(x^l, c), the mean and the best reward of every group they sampled), so the driver can show and
  log progress while Ray Train's `fit()` runs. `rollout()` is the rollout side of the pipeline record.
"""

from __future__ import annotations

import time
from collections import deque
from typing import Any

import numpy as np


class RunControl:
    """Run status, stop flag, learner (re)starts and the driver's inbox; run it as an async actor with num_cpus=0."""

    def __init__(self, tau: float, recent_groups: int) -> None:
        self._tau = tau
        self._status: dict[str, Any] = {"state": "running", "message": ""}
        self._starts: dict[int, int] = {}
        self._failures = 0
        self._records: list[dict[str, Any]] = []
        self._workers: dict[str, dict[str, Any]] = {}
        self._recent: deque[tuple[float, float, float]] = deque(maxlen=recent_groups)

    # ------------------------------------------------------------------------------------------------
    # Status and stop
    # ------------------------------------------------------------------------------------------------

    async def set_status(self, state: str, message: str = "", **extra: Any) -> None:
        """The learners' final word: 'done', 'stopped' or 'failed' with a one-line message."""
        self._status = {"state": state, "message": message, **extra}

    async def request_stop(self, reason: str) -> bool:
        """Ask the learners to stop after their current step (ignored once they have finished); True if taken."""
        if self._status["state"] != "running":
            return False
        self._status = {"state": "stop_requested", "message": reason}
        return True

    async def status(self) -> dict[str, Any]:
        """State ('running', 'stop_requested', 'done', 'stopped', 'failed'), message, and learner restarts."""
        return {**self._status, "learner_restarts": self._restarts()}

    # ------------------------------------------------------------------------------------------------
    # Learner restarts
    # ------------------------------------------------------------------------------------------------

    async def learner_started(self, rank: int) -> int:
        """Count a start of learner `rank`; returns how many times Ray Train has restarted the learner group in this
        run session: the failures it reported (`learner_failed`), or the earlier starts of this rank when more (a
        group that failed before it could report)."""
        self._starts[rank] = self._starts.get(rank, 0) + 1
        return self._restarts()

    async def learner_failed(self) -> None:
        """Ray Train found a failed learner group (`learner_group.CountLearnerFailures`); it restarts it."""
        self._failures += 1

    def _restarts(self) -> int:
        return max(self._failures, max(self._starts.values(), default=1) - 1)

    # ------------------------------------------------------------------------------------------------
    # Inbox
    # ------------------------------------------------------------------------------------------------

    async def report(self, records: list[dict[str, Any]]) -> None:
        """Append learner step records (plain dicts) for the driver to drain."""
        self._records.extend(records)

    async def drain(self) -> list[dict[str, Any]]:
        """Return and forget the records reported since the last drain."""
        records, self._records = self._records, []
        return records

    async def worker_report(self, name: str, stats: dict[str, Any],
                            rewards: list[tuple[float, float, float]] | None = None) -> None:
        """A rollout worker's counters (`RolloutWorker.stats`) and, after a delivery, (r(x^l, c), mean reward,
        best reward) of each group it delivered."""
        self._workers[name] = {**stats, "last_seen": time.time()}
        self._recent.extend(rewards or ())

    async def forget_worker(self, name: str) -> None:
        """A worker the pool removed (dead, hung, replaced, or its node left)."""
        self._workers.pop(name, None)

    async def rollout(self) -> dict[str, Any]:
        """The rollout side of the pipeline: each worker's last report, and over the most recent groups (finite
        ones) the mean r(x^l, c), mean reward, mean best reward and the fraction with r(x^l, c) < tau."""
        recent = np.array(self._recent, dtype=np.float64).reshape(-1, 3)
        finite = recent[np.isfinite(recent).all(axis=1)]
        empty = not len(finite)
        return {"workers": {k: dict(v) for k, v in self._workers.items()},
                "reward_l_mean": float("nan") if empty else float(finite[:, 0].mean()),
                "reward_mean": float("nan") if empty else float(finite[:, 1].mean()),
                "reward_best_mean": float("nan") if empty else float(finite[:, 2].mean()),
                "frac_below_tau": float("nan") if empty else float((finite[:, 0] < self._tau).mean())}
