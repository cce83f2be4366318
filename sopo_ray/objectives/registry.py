"""Every objective `objective.name` can pick, in one table: where its x^w and x^l come from and which loss it is.

The trainer reads everything else from this table: whether a run needs the rollout pool and the replay queue,
whether groups keep their best sample, and where a learner step's items come from (`Objective.source`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

PreferredSource = Literal["dataset", "best_sample", "offline_pair"]
UnpreferredSource = Literal["worst_sample", "offline_pair"]


@dataclass(frozen=True)
class Objective:
    """One alignment method."""

    name: str
    preferred: PreferredSource
    """x^w: "dataset" (the caption's dataset motion), "best_sample" (the highest-reward of the current policy's K
    samples) or "offline_pair" (the best of a pair built once from the reference model's samples)."""
    unpreferred: UnpreferredSource | None
    """x^l: "worst_sample" (the lowest-reward of the current policy's K samples), "offline_pair", or None (no x^l)."""
    loss: Literal["sopo", "dpo", "sft"]
    """SoPo (paper Eq. 17), Diffusion-DPO (Eq. 5-8) or the plain diffusion loss on x^w."""

    @property
    def rollouts(self) -> bool:
        """Whether training samples the current policy (the rollout pool and the replay queue run)."""
        return self.unpreferred == "worst_sample"

    @property
    def keeps_best(self) -> bool:
        """Whether a group keeps its best sample (x^w is a sample, not the dataset motion)."""
        return self.preferred != "dataset"

    @property
    def source(self) -> Literal["queue", "fixed_pairs", "captions"]:
        """Where a learner step's items come from: groups of the replay queue, the pairs sampled once before
        training, or the train captions (no samples at all)."""
        if self.rollouts:
            return "queue"
        return "fixed_pairs" if self.unpreferred == "offline_pair" else "captions"


OBJECTIVES = {o.name: o for o in (
    Objective("sopo", "dataset", "worst_sample", "sopo"),
    Objective("online_dpo", "best_sample", "worst_sample", "dpo"),
    Objective("offline_dpo", "offline_pair", "offline_pair", "dpo"),
    Objective("sft", "dataset", None, "sft"),
)}


def objective(name: str) -> Objective:
    """The table's entry for `name`; ValueError for a name it does not hold."""
    if name not in OBJECTIVES:
        raise ValueError(f"unknown objective '{name}'; expected one of {sorted(OBJECTIVES)}")
    return OBJECTIVES[name]


def pair_sources(name: str) -> tuple[PreferredSource, UnpreferredSource | None]:
    """Where objective `name` takes x^w and x^l from (`Objective.preferred`, `Objective.unpreferred`). Every
    objective but SFT also needs the reference model's errors."""
    spec = objective(name)
    return spec.preferred, spec.unpreferred
