"""`reward.kind: oracle`: the caption oracle ranks and gates the online samples instead of the learned reward.

A control, not a method: it shows how far the same trainer gets with a perfect ranker, separating what the
trainer does from what the reward model's ranking quality allows (embedded synthetic data only; the oracle reads
the structured parameters of the caption's dataset motion). Its Oracle column is then not an independent measure
of alignment; the evaluator's columns still are. beta_w's motion-to-motion similarity comes from the learned
reward model, which has an embedding space; the oracle has none.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor

from sopo_ray.data.synthetic.oracle import oracle_score
from sopo_ray.errors import ConfigError
from sopo_ray.reward import reward_from_payload
from sopo_ray.reward.tmr import TMRReward


class OracleReward:
    """r(x, c) = oracle_score(x, params of c's dataset motion) in [0, 1] (fraction of the caption's clauses met)."""

    def __init__(self, params: list[dict], similarity: TMRReward) -> None:
        self.params = params
        self.similarity = similarity

    def score(self, features: Tensor | np.ndarray, lengths: Tensor | np.ndarray | list[int], captions: list[str],
              motion_index: np.ndarray | list[int] | None = None) -> Tensor:
        """Oracle score `[B]` of each motion against the parameters of dataset motion `motion_index[b]`."""
        if motion_index is None:
            raise ValueError("the oracle reward needs the dataset motion of each caption (motion_index)")
        x = features.detach().cpu().numpy() if isinstance(features, Tensor) else np.asarray(features)
        n = np.asarray(lengths.cpu() if isinstance(lengths, Tensor) else lengths, dtype=np.int64)
        return torch.tensor([oracle_score(m[:length], self.params[int(i)]).score
                             for m, length, i in zip(x, n, motion_index, strict=True)], dtype=torch.float32)

    def motion_similarity(self, *args: Any) -> Tensor:
        """The learned reward model's motion-to-motion score (for beta_w)."""
        return self.similarity.motion_similarity(*args)

    def to(self, device: str | torch.device) -> OracleReward:
        self.similarity.to(device)
        return self

    def eval(self) -> OracleReward:
        self.similarity.eval()
        return self


def rollout_reward(kind: str, reward_payload: dict[str, Any], dataset: Any) -> TMRReward | OracleReward:
    """What ranks a split's online samples: the learned reward (`tmr`) or the caption oracle (`oracle`)."""
    learned = reward_from_payload(reward_payload)
    if kind == "tmr":
        return learned
    if dataset.params is None:
        raise ConfigError("reward.kind oracle needs the embedded synthetic dataset (its caption parameters); "
                          "use reward.kind tmr with real data")
    return OracleReward(dataset.params, learned)
