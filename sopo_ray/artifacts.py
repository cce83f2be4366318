"""The four things an alignment run needs, built on first use and cached under `cfg.workdir`:

    dataset    {data.root}                         sopo_ray.data.load_dataset (synthetic: generated once)
    base       {workdir}/base/{model.kind}/base.pt sopo_ray.models.pretrain  (same as `sopo pretrain`)
    reward     {workdir}/reward/reward.pt          sopo_ray.reward.train_reward (same as `sopo reward train`)
    evaluator  {workdir}/evaluator/evaluator.pt    sopo_ray.evaluation.train_evaluator

A later run (or `sopo pretrain` / `sopo reward train` run by hand) finds them there. Every model must come from
the dataset the run uses; a base model and reward model built on different datasets are refused.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console

from sopo_ray.checkpoint import load_checkpoint
from sopo_ray.config import Config, config_to_dict
from sopo_ray.errors import CheckpointError


@dataclass
class Artifacts:
    """Paths and loaded payloads of a run's inputs."""

    train: Any
    """MotionDataset, train split (captions to roll out, x^w)."""
    test: Any
    """MotionDataset, held-out split of the final evaluation."""
    base_path: Path
    base_payload: dict[str, Any]
    """The base generator's checkpoint dict (policy init and frozen reference)."""
    reward_path: Path
    reward_payload: dict[str, Any]
    evaluator_path: Path

    @property
    def reference_id(self) -> str:
        """Identity of the reference model: base checkpoint path and a hash of its weights' bytes (only the hash
        decides whether two ids name the same model, see `same_reference`)."""
        return f"{self.base_path}@{file_digest(self.base_path)}"


def same_reference(a: str | None, b: str | None) -> bool:
    """Whether two `reference_id`s name the same base model: same bytes, wherever the file lies (a relative and
    an absolute path to one checkpoint, or a checkout that moved, are the same reference)."""
    return a is not None and b is not None and a.rsplit("@", 1)[-1] == b.rsplit("@", 1)[-1]


def file_digest(path: Path, size: int = 12) -> str:
    """Short blake2b hex digest of a file's bytes."""
    h = hashlib.blake2b(digest_size=size)
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def base_path(cfg: Config) -> Path:
    """Where the run takes its base model from (the `sopo pretrain` default)."""
    from sopo_ray.models.pretrain import base_checkpoint

    return base_checkpoint(cfg)


def reward_path(cfg: Config) -> Path:
    """Where the run takes its reward model from (the `sopo reward train` default)."""
    return Path(cfg.workdir) / "reward" / "reward.pt"


def evaluator_path(cfg: Config) -> Path:
    """Where the run takes its evaluator from (the `sopo evaluate` default)."""
    return Path(cfg.workdir) / "evaluator" / "evaluator.pt"


def resolve(cfg: Config, console: Console | None = None, need_evaluator: bool = True) -> Artifacts:
    """Load the run's dataset splits and models, building any that are missing (minutes on first use)."""
    from sopo_ray.data.store import load_dataset
    from sopo_ray.evaluation.evaluator import train_evaluator
    from sopo_ray.models.pretrain import pretrain
    from sopo_ray.reward.training import train_reward

    console = console or Console()
    train = load_dataset(cfg.data, "train")
    test = load_dataset(cfg.data, "test")
    base = base_path(cfg)
    if not base.is_file():
        console.print(f"[bold]building the base model[/] ({cfg.model.kind}, {cfg.pretrain.steps} steps) -> {base}")
        pretrain(cfg, base.parent, dataset=train, console=console)
    reward = reward_path(cfg)
    if not reward.is_file():
        console.print(f"[bold]building the reward model[/] ({cfg.reward.steps} steps) -> {reward}")
        train_reward(cfg, reward)
    evaluator = evaluator_path(cfg)
    if need_evaluator and not evaluator.is_file():
        console.print(f"[bold]building the evaluator[/] ({cfg.evaluator.steps} steps) -> {evaluator}")
        train_evaluator(cfg, evaluator)
    base_payload = load_checkpoint(base, ("mdm", "mld"))
    reward_payload = load_checkpoint(reward, "reward")
    check_same_dataset(base, base_payload, reward, reward_payload, train.data_id)
    check_base_matches(cfg, base, base_payload)
    return Artifacts(train, test, base, base_payload, reward, reward_payload, evaluator)


def check_same_dataset(base: Path, base_payload: dict[str, Any], reward: Path, reward_payload: dict[str, Any],
                       data_id: str) -> None:
    """Refuse a base model and a reward model built on different datasets, or on another dataset than the run's."""
    ids = {"policy": base_payload.get("data_id"), "reward": reward_payload.get("data_id")}
    if None not in ids.values() and ids["policy"] != ids["reward"]:
        raise CheckpointError(
            f"reward model and policy from different datasets: {reward} was trained on {ids['reward']} but {base} "
            f"on {ids['policy']}; retrain one of them on the run's dataset (delete it and rerun to rebuild it)")
    for role, path in (("policy", base), ("reward", reward)):
        if ids[role] is not None and ids[role] != data_id:
            raise CheckpointError(
                f"the {role} model {path} was trained on dataset {ids[role]} but this run uses {data_id}; delete it "
                "to rebuild it on this dataset, or point data.root / workdir at the matching ones")


def check_base_matches(cfg: Config, path: Path, payload: dict[str, Any]) -> None:
    """Refuse a cached base model whose architecture or noise schedule differs from the run's config (it would
    otherwise be used silently, since the model is rebuilt from the checkpoint's own config)."""
    saved = payload.get("config", {})
    wanted = config_to_dict(cfg)
    diffs = [f"model.{k}" for k, v in wanted["model"].items() if saved.get("model", {}).get(k, v) != v]
    diffs += [f"diffusion.{k}" for k in ("num_timesteps", "schedule")
              if saved.get("diffusion", {}).get(k, wanted["diffusion"][k]) != wanted["diffusion"][k]]
    if diffs:
        raise CheckpointError(f"the cached base model {path} was built with another {', '.join(diffs[:3])} than this "
                              "config; use a different workdir for this config, or delete the file to rebuild it")
