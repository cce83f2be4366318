"""Config sections of what a run reports: the independent evaluator, `sopo experiment`, and the run's log
(live view, trackers, final report)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator

from sopo_ray.config.section import Section, Seed


class EvaluatorConfig(Section):
    latent_dim: Annotated[int, Field(ge=1)] = 64
    """Width of the evaluator's shared text/motion space (small keeps FID's finite-sample bias low on CPU-sized
    evaluations; T2M: 512)."""
    hidden_dim: Annotated[int, Field(ge=1)] = 128
    """Hidden width of the evaluator's convolutional motion encoder and GRU text encoder."""
    steps: Annotated[int, Field(ge=0)] = 1500
    """Training steps (train split only)."""
    batch_size: Annotated[int, Field(ge=2)] = 64
    """Batch size (at least 2: the contrastive loss needs in-batch mismatches)."""
    lr: Annotated[float, Field(gt=0)] = 3e-4
    """AdamW learning rate."""
    seed: Seed = 7
    """Seed (differs from the reward model's)."""
    margin: Annotated[float, Field(gt=0)] = 10.0
    """Hinge margin of the evaluator's contrastive loss on Euclidean distances (T2M: 10)."""
    eval_every: Annotated[int, Field(ge=1)] = 500
    """Training steps between R-precision checks on the val split."""
    replications: Annotated[int, Field(ge=1)] = 5
    """Repetitions of each evaluation (paper: 20); results are mean +- 95% CI."""
    num_captions: Annotated[int, Field(ge=3)] = 128
    """Held-out captions per replication (generated motions per replication; T2M: 1000, MDM: 1024)."""
    mm_captions: Annotated[int, Field(ge=0)] = 16
    """Captions used for MultiModality (T2M: 100)."""
    mm_generations: Annotated[int, Field(ge=1)] = 5
    """Generations per caption for MultiModality (T2M code: 30)."""
    r_precision_pool: Annotated[int, Field(ge=3)] = 32
    """R-precision pool: each motion against its caption and pool - 1 mismatched ones (T2M: 32)."""
    diversity_pairs: Annotated[int, Field(ge=1)] = 300
    """Random pairs for Diversity (T2M: 300); capped at the number of motions per replication."""
    mm_pairs: Annotated[int, Field(ge=1)] = 5
    """Random pairs of generations per caption for MultiModality (T2M: 10 of 30 generations)."""
    generate_batch_size: Annotated[int, Field(ge=1)] = 128
    """Captions generated per batch during evaluation (memory vs speed)."""
    paired_oracle: bool = True
    """Embedded data only: the run's final report also scores base and aligned with the oracle on every motion
    of each held-out split (one caption each, the same noise for both) and gives the paired difference's 95% CI,
    which is narrower than the replications' CIs because both models see the same samples."""

    @model_validator(mode="after")
    def _sizes(self) -> EvaluatorConfig:
        if not 3 <= self.r_precision_pool <= self.num_captions:
            raise ValueError(f"need 3 <= r_precision_pool <= num_captions (R@3 needs a pool of 3), "
                             f"got {self.r_precision_pool} and {self.num_captions}")
        if self.mm_captions > 0 and not 1 <= self.mm_pairs <= self.mm_generations:
            raise ValueError(f"MultiModality draws mm_pairs of mm_generations without replacement: need "
                             f"1 <= mm_pairs <= mm_generations, got {self.mm_pairs} and {self.mm_generations}")
        return self


class ExperimentConfig(Section):
    bases: list[Literal["mdm", "mld"]] = ["mdm", "mld"]
    """Base models `sopo experiment compare` aligns (each pretrained or reused under workdir/base/<kind>)."""
    methods: list[Literal["sft", "offline_dpo", "online_dpo", "sopo"]] = ["sft", "offline_dpo", "online_dpo", "sopo"]
    """Alignment methods compared, each through the same trainer with the same steps and batch size."""
    seeds: Annotated[list[Seed], Field(min_length=1)] = [0, 1, 2]
    """Training seeds of every method (the run seed: caption order, rollout noise, learner draws); CIs of a
    method's numbers are over these seeds (`experiments.seeds`), evaluation uses the experiment's own seed."""
    trainer: Literal["local", "ray"] = "local"
    """How each run trains: `local` (the single-process loop, two runs at a time as Ray tasks of one CPU) or `ray`
    (the distributed Driver, one run at a time); both train the same pairs the same way."""
    base_overrides: dict[str, list[str]] = {}
    """Extra `key=value` overrides per base kind (e.g. mld: [objective.k=2]); applied after model.kind."""
    curve_points: Annotated[int, Field(ge=0)] = 4
    """Intermediate checkpoints per aligned run evaluated for the oracle-accuracy-vs-steps plot (0: none)."""
    curve_captions: Annotated[int, Field(ge=3)] = 64
    """Held-out captions of each intermediate-checkpoint evaluation (one replication, no MultiModality)."""
    filmstrip_captions: Annotated[int, Field(ge=1)] = 3
    """Held-out captions drawn before and after SoPo in the filmstrip figure."""
    ablation_base: Literal["mdm", "mld"] = "mdm"
    """Base model of the ablations."""
    ablation_steps: Annotated[int | None, Field(ge=1)] = None
    """Learner steps of each ablation run (None: schedule.total_steps)."""
    ablation_replications: Annotated[int | None, Field(ge=1)] = None
    """Evaluation replications of each ablation run (None: evaluator.replications)."""
    ablations: dict[str, list[int | float]] = {
        "objective.k": [2, 4], "objective.tau": [0.3, 0.6], "objective.beta": [0.5, 2.0],
        "schedule.sync_interval": [1, 20], "schedule.max_staleness": [0, 4]}
    """SoPo ablations: config key -> values, each value one run that differs from the default only there."""

    @model_validator(mode="after")
    def _sizes(self) -> ExperimentConfig:
        if not self.bases or not self.methods:
            raise ValueError("experiment.bases and experiment.methods must not be empty")
        return self


class LogConfig(Section):
    """What a run shows and writes beside its metrics.jsonl: the live view, Ray's output, trackers, the final
    report."""

    live_view: bool = True
    """Show the rich live view in the terminal (progress lines are printed instead when false or not a TTY)."""
    final_eval: bool = True
    """At the end, evaluate the aligned model against the base with the independent evaluator (report.md)."""
    verbose: bool = False
    """Show Ray's own output on the console as Ray prints it: Ray Train's INFO lines (per-report, checkpoint),
    worker log prefixes, every repeat. Off: Ray Train logs at WARNING, every line Ray streams goes to
    <run>/logs/ray.log and the console shows each distinct one once. `--verbose` sets it."""
    tensorboard: bool = False
    """Write the run's metrics and config to TensorBoard event files in <run>/tensorboard
    (`pip install 'sopo_ray[tensorboard]'`)."""
    wandb: bool = False
    """Log the run's metrics and config to Weights & Biases, files under <run>/wandb
    (`pip install 'sopo_ray[wandb]'`)."""
    wandb_mode: Literal["offline", "online"] = "offline"
    """offline: no network, upload later with `wandb sync <run>/wandb/offline-run-*`; online: stream to the
    W&B server (needs `wandb login`)."""
    wandb_project: str = "sopo_ray"
    """W&B project the run is logged to."""
    wandb_entity: str | None = None
    """W&B team or user (None: the logged-in user's default)."""

    @field_validator("wandb_project")
    @classmethod
    def _project_named(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("wandb_project must not be empty")
        return value
