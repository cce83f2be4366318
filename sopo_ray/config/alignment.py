"""Config sections of what alignment optimises: the reward model that ranks the online samples, and the
objective that learns from the pairs."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator

from sopo_ray.config.section import Section, Seed


class RewardConfig(Section):
    kind: Literal["tmr", "oracle"] = "tmr"
    """What ranks and gates the online samples: the learned TMR-style model, or (a control, embedded data only)
    the caption oracle itself, a perfect ranker; beta_w's similarity still comes from the learned model."""
    checkpoint: Path | None = None
    """A trained reward checkpoint to use instead of {workdir}/reward/reward.pt (e.g. one trained with other
    reward settings by `sopo reward train --out`); it must come from the run's dataset."""
    latent_dim: Annotated[int, Field(ge=1)] = 128
    """Width of the TMR-style text and motion encoders and of the shared space."""
    num_layers: Annotated[int, Field(ge=1)] = 2
    """Transformer layers of each encoder."""
    num_heads: Annotated[int, Field(ge=1)] = 4
    """Attention heads."""
    temperature: Annotated[float, Field(gt=0)] = 0.1
    """InfoNCE temperature (TMR: 0.1)."""
    negative_filter: Annotated[float, Field(ge=0, le=1)] = 1.0
    """Drop in-batch negatives whose captions have text similarity (cos+1)/2 above this (TMR: 0.8; 1: off). With
    MiniLM on this grammar, 0.8 drops nearly every negative of the same action ("left hand" vs "right hand" is
    0.99), the ones that teach the details; identical captions are never negatives either way."""
    mirror: bool = True
    """Also train on every motion's left-right mirror with its captions' sides exchanged (HumanML3D's
    augmentation), each batch holding motions beside their mirrors: hard negatives for captions naming a side."""
    counterfactual_negatives: bool = True
    """Add one counterfactual caption per motion (one attribute word exchanged: side, direction, count, speed,
    angle) as an extra negative text (`reward.hard_negatives`)."""
    order_negatives: bool = False
    """Add every caption of two or more actions with two neighbouring actions swapped ("waves, then jumps" ->
    "jumps, then waves": `reward.hard_negatives.reorderings`) to its motion's extra negative texts."""
    corruption_negatives: bool = False
    """Add each motion, corrupted (drifting, partly frozen or reversed: `reward.hard_negatives.corrupt`), as an
    extra negative motion for its own caption."""
    steps: Annotated[int, Field(ge=0)] = 1000
    """Training steps (val retrieval plateaus by ~1000 on the default dataset)."""
    batch_size: Annotated[int, Field(ge=2)] = 64
    """Batch size (at least 2: the contrastive loss needs in-batch negatives)."""
    lr: Annotated[float, Field(gt=0)] = 3e-4
    """AdamW learning rate."""
    seed: Seed = 1
    """Seed (differs from the evaluator's so the two models are independent)."""
    dropout: Annotated[float, Field(ge=0, lt=1)] = 0.1
    """Dropout in both encoders (TMR: 0.1)."""
    frames_per_token: Annotated[int, Field(ge=1)] = 4
    """Consecutive frames embedded into one motion token (TMR: 1); 4 makes CPU training and scoring ~4x faster."""
    length_augment: Annotated[float, Field(ge=0, le=1)] = 0.0
    """Probability that a training motion is lengthened by standing still before and after it, to a random length
    up to the batch width (`hard_negatives.hold_pad`), so that a clip's length stops telling how many times its
    action repeats (docs/evaluation.md: without it the reward partly counts by length)."""
    text_layers: Annotated[int, Field(ge=0)] = 0
    """0: the text encoder is an MLP on the frozen sentence embedding (mean-pooled MiniLM). n > 0: n transformer
    layers over MiniLM's token states refine that MLP's output (`reward.tmr.TokenTextHead`), so word order and
    the side a caption names reach the text embedding (pooling leaves "A then B" and "B then A" at cosine 0.99)."""
    trajectory: bool = True
    """Feed the motion encoder the global root trajectory (heading, position in the start frame) beside the 263
    features, which hold it only as velocities (`reward.tmr.trajectory_channels`)."""
    eval_every: Annotated[int, Field(ge=1)] = 500
    """Steps between text-to-motion retrieval checks on the val split (logged, and stored at the end)."""

    @model_validator(mode="after")
    def _heads(self) -> RewardConfig:
        if self.latent_dim % self.num_heads != 0:
            raise ValueError(f"latent_dim ({self.latent_dim}) must be divisible by num_heads ({self.num_heads})")
        return self


class ObjectiveConfig(Section):
    name: Literal["sopo", "online_dpo", "offline_dpo", "sft"] = "sopo"
    """Which loss aligns the policy: SoPo or one of the baselines, all through the same trainer."""
    k: int = 2
    """Online samples per caption (paper: 4 for MDM, 2 for MLD; released code: 2)."""
    tau: float = 0.45
    """Threshold on the [0, 1] reward: the worst sample is used as x^l only if r(x^l, c) < tau."""
    tau_quantile: Annotated[float | None, Field(gt=0, lt=1)] = None
    """If set, tau is this quantile of r(x^w, c) over the dataset's own pairs, replacing `tau`."""
    tau_gate: Annotated[float | None, Field(gt=0, lt=1)] = None
    """If set, tau is calibrated at the start of a run so that this fraction of the base policy's groups has
    r(x^l, c) < tau (the quantile of min_k r over K samples of 256 train captions), replacing `tau`."""
    beta: Annotated[float, Field(gt=0)] = 1.0
    """DPO temperature on the unpreferred term."""
    beta_w: Literal["similarity", "constant"] = "similarity"
    """Preferred-term weight: `similarity` is beta * (C - min_k sim(x^w, x^k)); `constant` is beta."""
    beta_w_c: Annotated[float, Field(ge=1)] = 2.0
    """The constant C in beta_w (paper: C >= 1, so the weight stays positive; released code: 2)."""
    timestep_weight: Annotated[float, Field(gt=0)] | Literal["T"] = "T"
    """T * w_t of Eq. 17, the scale in front of the DPO logit: "T" is diffusion.num_timesteps (w_t = 1, the
    constant weighting of Diffusion-DPO); a number sets T * w_t directly (1 is what the released code does, which
    keeps the logit near 0: a weighted SFT plus an unbounded push on x^l)."""

    offline_pairs: Annotated[int, Field(ge=1)] = 256
    """offline_dpo only: captions whose best-vs-worst pair is sampled once from the reference model and reused."""

    @field_validator("k")
    @classmethod
    def _k_range(cls, k: int) -> int:
        if k < 2:
            raise ValueError(f"k must be >= 2 to pick a worst sample from a group, got {k}")
        return k

    @field_validator("tau")
    @classmethod
    def _tau_range(cls, tau: float) -> float:
        if not 0.0 <= tau <= 1.0:
            raise ValueError(f"tau must lie in the reward range [0, 1], got {tau}")
        return tau

    @model_validator(mode="after")
    def _one_tau_rule(self) -> ObjectiveConfig:
        if self.tau_quantile is not None and self.tau_gate is not None:
            raise ValueError("set at most one of tau_quantile and tau_gate (each replaces tau)")
        return self
