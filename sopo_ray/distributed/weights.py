"""`WeightStore`: versioned policy weights, from the learner to the rollout workers (a Ray actor).

Weights travel one way, through the object store: learner rank 0 calls `publish(version, step, state)` with the
policy's state as numpy arrays (and the driver publishes version 0, or the resumed versions); the store re-puts them
so it owns the object (a learner that exits or restarts does not take the weights with it) and keeps the newest
`keep` versions. Rollout workers ask for `latest()` or, in deterministic mode, an exact `get(version)` between
batches, never during one, and fetch the tensors by the returned ref. Every caller bounds its wait with
`faults.sync_timeout_s` (`call_with_timeout`); a publish or pull that does not answer in time is an error that
names the actor, never a silent hang.

What a version holds (`schedule.publish_weights`): by default only the entries alignment changes, the policy's
trainable parameters (`trainable_keys`: the denoiser; an MLD's VAE and the mean/std buffers stay as they are in
the base checkpoint, and the text encoder is not in the state dict at all). Every rollout worker builds its policy
from the base checkpoint it is given at start (`RolloutWorker.__init__`), so loading a version's entries over it
(`load_numpy_state`) gives the learner's whole model, also in a worker that started late or replaced a dead one.
`full` publishes every entry (what a policy whose frozen part changed would need).
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
from sopo_ray.models.generator import generator_from_payload


@dataclass
class VersionInfo:
    """A published policy version and the object ref of its numpy state dict (owned by the store)."""

    version: int
    step: int
    published_at: float
    ref: Any


class WeightStore:
    """The newest `keep` policy versions; run it as an async actor with num_cpus=0."""

    def __init__(self, keep: int = 4) -> None:
        self._keep = max(1, keep)
        self._versions: dict[int, VersionInfo] = {}
        self._cond = asyncio.Condition()
        self._republished = 0

    async def publish(self, version: int, step: int, state: dict[str, np.ndarray]) -> float:
        """Store `state` as `version`. Re-publishing a version (a learner restarted from a checkpoint) replaces it
        and forgets every newer one: those weights belong to the learner that died."""
        async with self._cond:
            if version in self._versions:
                self._republished += 1
            self._versions[version] = VersionInfo(version, step, time.time(), ray.put(state))
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

    async def held(self) -> dict[str, Any]:
        """The versions held and how many publishes replaced an existing version."""
        return {"versions": sorted(self._versions), "republished": self._republished}


def trainable_keys(policy: Any) -> list[str]:
    """State-dict names of the policy's trainable parameters (`trainable_parameters()`), in state-dict order."""
    ids = {id(p) for p in policy.trainable_parameters()}
    return [k for k, v in policy.state_dict(keep_vars=True).items() if id(v) in ids]


def publish_keys(mode: str, payload: dict[str, Any]) -> list[str] | None:
    """The entries a version of the policy built from checkpoint `payload` publishes: its trainable parameters
    (`mode` 'trainable') or all (None, 'full'); see `schedule.publish_weights`."""
    return trainable_keys(generator_from_payload(payload)) if mode == "trainable" else None


def state_to_numpy(state: dict[str, torch.Tensor] | torch.nn.Module, keys: list[str] | None = None,
                   ) -> dict[str, np.ndarray]:
    """A state dict (or a module's) as CPU numpy arrays (zero-copy through the object store): the entries `keys`
    names, or all of them."""
    if isinstance(state, torch.nn.Module):
        state = state.state_dict()
    return {k: state[k].detach().cpu().numpy() for k in (state if keys is None else keys)}


def load_numpy_state(module: torch.nn.Module, state: dict[str, np.ndarray]) -> None:
    """Copy a numpy state (read-only arrays from `ray.get` are fine) into `module`: all of its entries or a subset
    (a version published with `trainable_keys`); the entries it leaves out keep their values. A name the module
    does not have, or a shape it does not match, is an error, and then nothing is copied."""
    own = module.state_dict()
    wrong = [k for k, v in state.items() if k not in own or tuple(own[k].shape) != tuple(np.shape(v))]
    if wrong:
        raise ClusterError(f"weights do not fit the policy: {len(wrong)} entries unknown or of another shape (first: "
                           f"{wrong[0]}); the learner and the rollout workers must start from the same base model")
    with torch.no_grad():
        for k, v in state.items():
            own[k].copy_(torch.from_numpy(np.array(v)))


def call_with_timeout(ref: Any, timeout_s: float, what: str) -> Any:
    """`ray.get(ref, timeout=timeout_s)`, turning a timeout into a one-line error that names `what`."""
    try:
        return ray.get(ref, timeout=timeout_s)
    except GetTimeoutError:
        raise ClusterError(f"{what} did not finish within {timeout_s:g} s (faults.sync_timeout_s); the actor may "
                           "be overloaded or dead: check `ray status`, or raise faults.sync_timeout_s") from None


def find_version(store: Any, version: int | None, timeout_s: float, who: str) -> VersionInfo:
    """The newest published version (`version` None) or exactly `version` (waiting for its publish), within
    `timeout_s`; a ClusterError when the store holds none."""
    if version is None:
        info = call_with_timeout(store.latest.remote(), timeout_s, f"{who}: asking the weight store for weights")
    else:
        info = call_with_timeout(store.get.remote(version, timeout_s), timeout_s + 5.0,
                                 f"{who}: waiting for policy version {version}")
    if info is None:
        wanted = "published version yet" if version is None else f"version {version}"
        raise ClusterError(f"{who}: the weight store holds no {wanted}; the learner has not published it (or it was "
                           "evicted): check the learner's log")
    return info


def fetch_state(info: VersionInfo, timeout_s: float, who: str) -> dict[str, np.ndarray]:
    """The numpy state dict of a located version."""
    return call_with_timeout(info.ref, timeout_s, f"{who}: fetching weights v{info.version}")


def fetch_weights(store: Any, version: int | None, timeout_s: float, who: str) -> tuple[int, dict[str, np.ndarray]]:
    """(version, numpy state) of the newest version (`version` None) or exactly `version`, within `timeout_s`."""
    info = find_version(store, version, timeout_s, who)
    return info.version, fetch_state(info, timeout_s, who)
