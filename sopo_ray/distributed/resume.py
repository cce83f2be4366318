"""Exact resume: what a checkpoint holds and how a run continues from it, save and restore side by side.

A checkpoint folder (`learner-<session>/step_<step>/` under the run directory or `cluster.storage_path`) holds

    learner.pt    policy, optimizer, step, version, health counters, the reference's id, tau (every objective)
    pipeline.pt   objectives with rollouts: the replay queue's `BoardState`, its queued groups (unless
                  checkpoint.keep_queue_on_resume is off) and the weights of the policy versions tickets may still
                  need that the learner's policy is not: in deterministic mode every version of the staleness
                  window, and the current version whenever the checkpoint falls inside a sync window (the policy has
                  moved on since that version was published)

Learner rank 0 writes both (`capture_pipeline` for the second); every learner continues from the newest checkpoint
whose learner.pt loads (`newest_loadable`, also after Ray Train restarted it); the driver of a resumed run puts
the weight store and the replay queue back where that checkpoint left them (`restore_services`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import ray
import torch

from sopo_ray.checkpoint import load_checkpoint
from sopo_ray.distributed.group import RolloutGroup
from sopo_ray.distributed.schedule import SchedulePlan
from sopo_ray.distributed.storage import RunStorage, local_copy
from sopo_ray.distributed.ticket_board import BoardState
from sopo_ray.distributed.weights import call_with_timeout, fetch_weights, state_to_numpy
from sopo_ray.errors import CheckpointError

LEARNER_FILE = "learner.pt"
PIPELINE_FILE = "pipeline.pt"


@dataclass
class PipelineState:
    """pipeline.pt: the replay queue's board, its queued groups (None: not kept) and old policy versions."""

    board: BoardState
    groups: list[RolloutGroup] | None
    versions: dict[int, dict[str, torch.Tensor]] = field(default_factory=dict)

    def to_state(self) -> dict[str, Any]:
        """Plain values and tensors (checkpoints are loaded with weights_only=True)."""
        return {"queue": self.board.to_state(),
                "groups": None if self.groups is None else [g.to_state() for g in self.groups],
                "versions": self.versions}

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> PipelineState:
        groups = None if state["groups"] is None else [RolloutGroup.from_state(g) for g in state["groups"]]
        return cls(BoardState.from_state(state["queue"]), groups, {int(v): w for v, w in state["versions"].items()})


def capture_pipeline(queue: Any, store: Any, plan: SchedulePlan, step: int, *, keep_groups: bool,
                     timeout_s: float) -> PipelineState:
    """The replay queue's state as a learner checkpoints it after `step` steps: the board, the queued groups (when
    `keep_groups`) and the weights of the versions a resumed ticket may need that the learner's own policy does
    not hold. In deterministic mode tickets name exact versions: every version a re-issued ticket names or the
    staleness window allows. In either mode the current version when `step` is inside its sync window: rollouts
    sample with that version's weights, not with the policy trained since."""
    version = plan.version_at(step)
    snap = call_with_timeout(queue.snapshot.remote(keep_groups), timeout_s, "learner: snapshotting the replay queue")
    groups = None
    if keep_groups:
        groups = snap.groups.pick(call_with_timeout(snap.groups.refs, timeout_s, "learner: queue groups"))
    needed = set()
    if plan.deterministic:
        needed = {t.version for t in snap.state.reissue}.union(range(max(0, version - plan.max_staleness), version))
    if step != version * plan.sync_interval:
        needed.add(version)
    versions = {}
    for v in sorted(needed):
        _, state = fetch_weights(store, v, timeout_s, "learner checkpoint")
        versions[v] = {k: torch.from_numpy(np.array(a)) for k, a in state.items()}
    return PipelineState(snap.state, groups, versions)


@dataclass
class ResumePoint:
    """The newest checkpoint of a run that loads (`folder` None: there is none; start from the base model)."""

    folder: str | None = None
    learner: dict[str, Any] | None = None
    """The checkpoint's learner.pt payload (policy, optimizer, step, version, health, reference)."""
    pipeline: PipelineState | None = None
    """Its pipeline.pt, when asked for and present."""
    skipped: list[str] = field(default_factory=list)
    """Newer checkpoints that could not be read, each as `<file>: <why>`."""

    @property
    def step(self) -> int:
        return int(self.learner["step"]) if self.learner else 0


def newest_loadable(storage: RunStorage, data_id: str | None = None, with_queue: bool = False) -> ResumePoint:
    """The newest checkpoint whose learner.pt loads, skipping unreadable ones (a folder cut off by a crash) for the
    one before (`with_queue`: with its pipeline.pt, which must then load too, since the learners continue from
    that folder)."""
    point = ResumePoint()
    for _, folder in reversed(storage.checkpoints(LEARNER_FILE)):
        with local_copy(folder) as local:
            try:
                point.learner = load_checkpoint(local / LEARNER_FILE, "trainer", data_id)
            except CheckpointError as exc:
                point.skipped.append(str(exc).split("; ")[0].removeprefix("checkpoint "))
                continue
            point.folder = folder
            if with_queue and (local / PIPELINE_FILE).is_file():
                try:
                    point.pipeline = PipelineState.from_state(
                        load_checkpoint(local / PIPELINE_FILE, "pipeline", data_id)["state"])
                except CheckpointError as exc:
                    raise CheckpointError(f"{str(exc).split('; ')[0]}, but the learners would continue from its "
                                          f"{LEARNER_FILE}; delete the folder {folder} to resume from the checkpoint "
                                          "before it") from None
        break
    return point


def restore_services(point: ResumePoint, base_state: dict[str, torch.Tensor], store: Any, queue: Any,
                     keys: list[str] | None = None) -> int:
    """Publish the weights a run continues from and refill its replay queue; returns the learner step it
    continues at. Without a checkpoint that is version 0 = the base model; otherwise the versions its pipeline.pt
    holds, its queue, and its policy as the checkpoint's version unless pipeline.pt holds that version's own
    weights (the checkpoint fell inside a sync window). `keys`: the entries a version
    publishes (`weights.publish_keys`; None: all)."""
    if point.learner is None:
        ray.get(store.publish.remote(0, 0, state_to_numpy(base_state, keys)))
        return 0
    if point.pipeline is not None:
        for v, state in sorted(point.pipeline.versions.items()):
            ray.get(store.publish.remote(v, 0, state_to_numpy(state)))
        ray.get(queue.restore.remote(point.pipeline.board, point.pipeline.groups, "resume"))
    learner = point.learner
    if point.pipeline is None or int(learner["version"]) not in point.pipeline.versions:
        policy = state_to_numpy(learner["state"]["policy"], keys)
        ray.get(store.publish.remote(int(learner["version"]), int(learner["step"]), policy))
    return int(learner["step"])
