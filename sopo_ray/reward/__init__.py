"""The reward model r(x, c) SoPo trains against, score in [0, 1]:

    tmr.py             our TMR-style contrastive text and motion encoders
    tmr_official.py    the released TMR, imported key for key (real data)
    training.py        training ours on the train split (hard negatives: hard_negatives.py)
    oracle.py          `reward.kind: oracle`, the caption oracle as a perfect ranker (a control)
    diagnostics.py     `sopo reward check`: agreement with the oracle on a policy's own samples

`load_reward` / `reward_from_payload` read either kind of checkpoint.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from sopo_ray.checkpoint import load_checkpoint
from sopo_ray.reward.tmr import KINDS, OFFICIAL_KIND, TMRReward, tmr_from_payload
from sopo_ray.reward.tmr_official import official_reward_from_payload

__all__ = ["load_reward", "reward_from_payload"]


def reward_from_payload(payload: dict[str, Any]) -> TMRReward:
    """Rebuild a reward model (eval mode) from a loaded checkpoint payload of kind "reward" (ours) or
    "tmr_official" (the imported released TMR, which has the same interface)."""
    if payload["kind"] == OFFICIAL_KIND:
        return official_reward_from_payload(payload)  # type: ignore[return-value]
    return tmr_from_payload(payload)


def load_reward(path: str | Path, data_id: str | None = None, device: str | torch.device = "cpu") -> TMRReward:
    """Load a trained reward model (kind "reward", or an imported released TMR); `data_id` refuses one trained on
    another dataset."""
    return reward_from_payload(load_checkpoint(path, KINDS, data_id)).to(device)
