"""Typed configuration: pydantic models with defaults, one docstring per field.

Precedence: field defaults < the YAML a file extends (`extends: default.yaml`) < YAML file (`--config
configs/x.yaml`) < `--set a.b=value` flags.
Unknown keys and wrong types are errors that name the key, the file and the allowed values. Every float must be
finite (NaN/inf refused), ranges are constraints on the field lines, cross-field checks live beside the fields
as validators.

Modules: section.py (the Section base, Seed), generator.py (data, model, diffusion, pretrain), alignment.py
(reward, objective), trainer.py (schedule, optimizer, faults, checkpoint, cluster), evaluation.py (evaluator,
experiment, log), pretrained.py (released files), root.py (Config and its cross-section checks), loading.py (YAML
`extends`, `--set`, error messages). Import every name from here: `from sopo_ray.config import Config`.
"""

from sopo_ray.config.alignment import ObjectiveConfig, RewardConfig
from sopo_ray.config.evaluation import EvaluatorConfig, ExperimentConfig, LogConfig
from sopo_ray.config.generator import DataConfig, DiffusionConfig, ModelConfig, PretrainConfig
from sopo_ray.config.loading import (
    MODEL_SECTIONS,
    config_to_dict,
    load_config,
    model_config,
    parse_override,
    read_yaml_config,
    with_absolute_paths,
    with_overrides,
)
from sopo_ray.config.pretrained import PretrainedConfig
from sopo_ray.config.root import Config
from sopo_ray.config.section import SEED_LIMIT, Section, Seed
from sopo_ray.config.trainer import CheckpointConfig, ClusterConfig, FaultsConfig, OptimizerConfig, ScheduleConfig

__all__ = [
    "MODEL_SECTIONS", "SEED_LIMIT", "CheckpointConfig", "ClusterConfig", "Config", "DataConfig", "DiffusionConfig",
    "EvaluatorConfig", "ExperimentConfig", "FaultsConfig", "LogConfig", "ModelConfig", "ObjectiveConfig",
    "OptimizerConfig", "PretrainConfig", "PretrainedConfig", "RewardConfig", "ScheduleConfig", "Section", "Seed",
    "config_to_dict", "load_config", "model_config", "parse_override", "read_yaml_config", "with_absolute_paths",
    "with_overrides",
]
