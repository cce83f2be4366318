"""The one data contract between rollout and learning: a `RolloutGroup` per caption.

A rollout worker samples K motions for a caption with the policy at a known version, scores them with the reward
model, and keeps what the learner needs: the lowest-reward sample x^l with r(x^l, c), all K rewards, the reward
model's similarity of the dataset motion x^w to each sample (for beta_w), the best sample when the objective uses
it, and the seeds that regenerate every sample. The learner looks x^w up in the dataset by `motion_index`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch


@dataclass(frozen=True)
class CaptionRef:
    """One caption of the train split: the unit the caption stream, the seeds and the groups refer to."""

    caption_id: str
    """f"{motion_id}#{j}": motion id and the caption's index among that motion's captions."""
    text: str
    """The caption."""
    motion_index: int
    """Row of the caption's dataset motion (x^w) in the split."""


def caption_table(motion_ids: list[str], captions: list[list[str]]) -> list[CaptionRef]:
    """Every (motion, caption) pair of a split, in dataset order; caption ids follow the f"{id}#{j}" contract."""
    return [CaptionRef(f"{mid}#{j}", text, i)
            for i, (mid, texts) in enumerate(zip(motion_ids, captions, strict=True))
            for j, text in enumerate(texts)]


@dataclass
class RolloutGroup:
    """K online samples of one caption reduced to what a preference step needs. Arrays are numpy, float32."""

    caption_id: str
    """Caption id f"{motion_id}#{j}"."""
    caption: str
    """Caption text c."""
    motion_index: int
    """Row of x^w (the caption's dataset motion) in the train split."""
    length: int
    """Frames of every sample in the group (the dataset motion's length, as in the T2M protocol)."""
    x_l: np.ndarray
    """[length, D] un-normalised features of the lowest-reward sample (x^l)."""
    rewards: np.ndarray
    """[K] r(x^k, c) of every sample, in [0, 1]."""
    sims_w: np.ndarray
    """[K] reward-model similarity of x^w to each sample, in [0, 1] (beta_w uses its minimum)."""
    loser: int
    """Index k of x^l (argmin of rewards)."""
    winner: int
    """Index k of the highest-reward sample (argmax of rewards)."""
    policy_version: int
    """Weight version of the policy that sampled the group."""
    seeds: np.ndarray
    """[K] int64 noise seed of each sample, from (run seed, caption id, k, policy version)."""
    created_at: float
    """Wall-clock time (time.time()) when the group was scored."""
    ticket: int = -1
    """Rollout ticket (batch of captions) the group belongs to."""
    position: int = -1
    """Position of the caption in the run's caption stream (orders groups in deterministic mode)."""
    worker: str = ""
    """Name of the rollout worker that sampled it."""
    x_best: np.ndarray | None = None
    """[length, D] highest-reward sample, kept only when the objective prefers it (online/offline DPO)."""
    oracle: np.ndarray | None = None
    """[K] caption-oracle score of every sample (embedded data only): diagnostics of the reward's ranking on the
    policy's own samples, never used by the loss."""

    @property
    def k(self) -> int:
        """Number of samples K."""
        return int(self.rewards.shape[0])

    @property
    def reward_l(self) -> float:
        """r(x^l, c), the reward of the unpreferred sample."""
        return float(self.rewards[self.loser])

    @property
    def reward_best(self) -> float:
        """Reward of the best sample."""
        return float(self.rewards[self.winner])

    def is_finite(self) -> bool:
        """True when every reward, similarity and kept sample is finite (a NaN group is dropped, never trained)."""
        arrays = [self.rewards, self.sims_w, self.x_l] + ([self.x_best] if self.x_best is not None else [])
        return all(bool(np.isfinite(a).all()) for a in arrays)

    def validate(self) -> RolloutGroup:
        """Check shapes, dtypes and indices; raise ValueError naming the field. Returns self for chaining."""
        k = self.rewards.shape[0] if self.rewards.ndim == 1 else -1
        if k < 2:
            raise ValueError(f"group {self.caption_id}: rewards must be [K] with K >= 2, got {self.rewards.shape}")
        for name in ("sims_w", "seeds", "oracle"):
            if getattr(self, name) is not None and getattr(self, name).shape != (k,):
                raise ValueError(f"group {self.caption_id}: {name} must be [{k}], got {getattr(self, name).shape}")
        if self.length < 1:
            raise ValueError(f"group {self.caption_id}: length must be >= 1, got {self.length}")
        for name in ("x_l", "x_best"):
            arr = getattr(self, name)
            if arr is None:
                continue
            if arr.ndim != 2 or arr.shape[0] != self.length:
                raise ValueError(f"group {self.caption_id}: {name} must be [{self.length}, D], got {arr.shape}")
            if arr.dtype != np.float32:
                raise ValueError(f"group {self.caption_id}: {name} must be float32, got {arr.dtype}")
        if not (0 <= self.loser < k and 0 <= self.winner < k):
            raise ValueError(f"group {self.caption_id}: loser/winner {self.loser}/{self.winner} outside 0..{k - 1}")
        if self.policy_version < 0:
            raise ValueError(f"group {self.caption_id}: policy_version must be >= 0, got {self.policy_version}")
        return self

    def to_state(self) -> dict:
        """Plain dict of tensors, numbers and strings (checkpoints are loaded with weights_only=True)."""
        state = {name: getattr(self, name) for name in self.__dataclass_fields__}
        return {k: (torch.from_numpy(np.array(v)) if isinstance(v, np.ndarray) else v) for k, v in state.items()}

    @classmethod
    def from_state(cls, state: dict) -> RolloutGroup:
        """Inverse of `to_state` (arrays may come back as tensors or numpy)."""
        values = {k: (v.numpy() if isinstance(v, torch.Tensor) else v) for k, v in state.items()}
        return cls(**values).validate()
