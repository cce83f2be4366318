"""Config sections of how the alignment trainer runs: the semi-online schedule, the optimizer, fault
tolerance, learner checkpoints and the Ray cluster."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, model_validator

from sopo_ray.config.section import Section


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
    learner_poll_s: Annotated[float, Field(gt=0, le=60)] = 0.5
    """Seconds between Ray Train's health checks of the learner group (Ray's own default: 2). Each check gates the
    group's start, its restart after a failure and the end of the run, so a run idles up to this long at each;
    RAY_TRAIN_HEALTH_CHECK_INTERVAL_S in the environment, when set, wins."""


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
