"""`WeightStore`: the learner's outbox (a Ray actor): versioned policy weights, step records and run status.

Weights travel one way, through the object store: learner rank 0 calls `publish(version, step, state)` with the
state dict as numpy arrays; the store re-puts them so it owns the object (a learner that exits or restarts does not
take the weights with it) and keeps the newest `keep` versions. Rollout workers ask for `latest()` or, in
deterministic mode, an exact `get(version)` between batches, never during one. Every caller bounds its wait with
`ray.get(..., timeout=faults.sync_timeout_s)` (see `fetch_weights`); a publish or pull that does not answer in
time is an error that names the actor, never a silent hang.

The same actor carries the learner's per-step metric records (`report` / `drain`) and its final `status`, so the
driver can show and log live progress while Ray Train's `fit()` is running.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import ray
import torch
from ray.exceptions import GetTimeoutError

from sopo_ray.errors import ClusterError


@dataclass
class VersionInfo:
    """A published policy version; `ref` is a one-element list holding the ObjectRef of the state dict."""

    version: int
    step: int
    published_at: float
    ref: list[Any]


class WeightStore:
    """Versioned weights + learner progress; run it as an async actor with num_cpus=0."""

    def __init__(self, keep: int = 4) -> None:
        self._keep = max(1, keep)
        self._versions: dict[int, VersionInfo] = {}
        self._cond = asyncio.Condition()
        self._records: list[dict[str, Any]] = []
        self._status: dict[str, Any] = {"state": "running", "message": ""}
        self._republished = 0
        self._starts: dict[int, int] = {}
        self._failures = 0

    async def publish(self, version: int, step: int, state: dict[str, np.ndarray]) -> float:
        """Store `state` as `version` (re-publishing a version, after a learner restart, replaces it)."""
        async with self._cond:
            if version in self._versions:
                self._republished += 1
            self._versions[version] = VersionInfo(version, step, time.time(), [ray.put(state)])
            for old in sorted(self._versions)[:-self._keep]:
                del self._versions[old]
            for newer in [v for v in self._versions if v > version]:
                del self._versions[newer]
            self._cond.notify_all()
            return self._versions[version].published_at

    async def latest(self) -> VersionInfo | None:
        """The newest published version, or None before the first publish."""
        return self._versions[max(self._versions)] if self._versions else None

    async def get(self, version: int, timeout: float = 0.0) -> VersionInfo | None:
        """Exactly `version`, waiting up to `timeout` s for it to be published; None if absent or evicted."""
        async with self._cond:
            try:
                await asyncio.wait_for(self._cond.wait_for(lambda: version in self._versions), timeout)
            except TimeoutError:
                return None
            return self._versions[version]

    async def report(self, records: list[dict[str, Any]]) -> None:
        """Append learner step records (plain dicts) for the driver to drain."""
        self._records.extend(records)

    async def drain(self) -> list[dict[str, Any]]:
        """Return and forget the records reported since the last drain."""
        records, self._records = self._records, []
        return records

    async def learner_started(self, rank: int) -> int:
        """Count a start of learner `rank`; returns how many times Ray Train has restarted the learner group in this
        run session: the failures it reported (`learner_failed`), or the earlier starts of this rank when more (a
        group that failed before it could report)."""
        self._starts[rank] = self._starts.get(rank, 0) + 1
        return self._restarts()

    async def learner_failed(self) -> None:
        """Ray Train found a failed learner group (`learner.CountLearnerFailures`); it restarts it."""
        self._failures += 1

    def _restarts(self) -> int:
        return max(self._failures, max(self._starts.values(), default=1) - 1)

    async def set_status(self, state: str, message: str = "", **extra: Any) -> None:
        """The learner's final word: 'done', 'stopped', 'failed' with a one-line message."""
        self._status = {"state": state, "message": message, **extra}

    async def request_stop(self, reason: str) -> bool:
        """Ask the learners to stop after their current step (ignored once they have finished); True if taken."""
        if self._status["state"] != "running":
            return False
        self._status = {"state": "stop_requested", "message": reason}
        return True

    async def status(self) -> dict[str, Any]:
        """Status plus the versions held and how many were re-published."""
        return {**self._status, "versions": sorted(self._versions), "republished": self._republished,
                "learner_restarts": self._restarts()}


def state_to_numpy(module: torch.nn.Module) -> dict[str, np.ndarray]:
    """A module's state dict as CPU numpy arrays (zero-copy through the object store)."""
    return {k: v.detach().cpu().numpy() for k, v in module.state_dict().items()}


def load_numpy_state(module: torch.nn.Module, state: dict[str, np.ndarray]) -> None:
    """Copy a numpy state dict (read-only arrays from `ray.get` are fine) into `module`."""
    device = next(iter(module.state_dict().values())).device
    module.load_state_dict({k: torch.from_numpy(np.array(v)).to(device) for k, v in state.items()})


def call_with_timeout(ref: Any, timeout_s: float, what: str) -> Any:
    """`ray.get(ref, timeout=timeout_s)`, turning a timeout into a one-line error that names `what`."""
    try:
        return ray.get(ref, timeout=timeout_s)
    except GetTimeoutError:
        raise ClusterError(f"{what} did not finish within {timeout_s:g} s (faults.sync_timeout_s); the actor may "
                           "be overloaded or dead: check `ray status`, or raise faults.sync_timeout_s") from None


def fetch_weights(store: Any, version: int | None, timeout_s: float, who: str) -> tuple[int, dict[str, np.ndarray]]:
    """(version, numpy state) of the newest version (`version` None) or exactly `version`, within `timeout_s`."""
    if version is None:
        info = call_with_timeout(store.latest.remote(), timeout_s, f"{who}: asking the weight store for weights")
    else:
        info = call_with_timeout(store.get.remote(version, timeout_s), timeout_s + 5.0,
                                 f"{who}: waiting for policy version {version}")
    if info is None:
        wanted = "published version yet" if version is None else f"version {version}"
        raise ClusterError(f"{who}: the weight store holds no {wanted}; the learner has not published it (or it was "
                           "evicted): check the learner's log")
    state = call_with_timeout(info.ref[0], timeout_s, f"{who}: fetching weights v{info.version}")
    return info.version, state
