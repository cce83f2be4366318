"""The root Config: run-level keys, every section, and the checks that span sections."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from pydantic import Field, model_validator

from sopo_ray.config.alignment import ObjectiveConfig, RewardConfig
from sopo_ray.config.evaluation import EvaluatorConfig, ExperimentConfig, LogConfig
from sopo_ray.config.generator import DataConfig, DiffusionConfig, ModelConfig, PretrainConfig
from sopo_ray.config.pretrained import PretrainedConfig
from sopo_ray.config.section import Section, Seed
from sopo_ray.config.trainer import CheckpointConfig, ClusterConfig, FaultsConfig, OptimizerConfig, ScheduleConfig


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
