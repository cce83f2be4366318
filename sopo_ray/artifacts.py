"""The four things an alignment run needs, built on first use and cached under `cfg.workdir`:

    dataset    {data.root}                         sopo_ray.data.load_dataset (synthetic: generated once)
    base       {workdir}/base/{model.kind}/base.pt sopo_ray.models.pretrain  (same as `sopo pretrain`)
    reward     {workdir}/reward/reward.pt          sopo_ray.reward.train_reward (same as `sopo reward train`)
    evaluator  {workdir}/evaluator/evaluator.pt    sopo_ray.evaluation.train_evaluator

A later run (or `sopo pretrain` / `sopo reward train` run by hand) finds them there. Every model must come from
the dataset the run uses; a base model and reward model built on different datasets are refused.

With `pretrained.*` set, the user's released files are imported instead of building (seconds, no training):

    base       {workdir}/base/mdm_official/imported-{digest}.pt   pretrained.mdm (sopo_ray.models.mdm_official)
    reward     {workdir}/reward/tmr_official-{digest}.pt          pretrained.tmr (sopo_ray.reward.tmr_official)
    evaluator  {workdir}/evaluator/t2m_official-{digest}.pt       pretrained.t2m_evaluator (evaluation.t2m_official)

named by a digest of the source files, so other files are imported anew and never mixed up with older imports.
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


def sources_digest(files: list[Path], *extra: str) -> str:
    """Short digest of several files' bytes (a missing file counts as absent: its importer names it) and strings."""
    h = hashlib.blake2b(digest_size=8)
    for path in files:
        h.update((file_digest(path) if path.is_file() else "-").encode())
    for item in extra:
        h.update(item.encode())
    return h.hexdigest()


def _mdm_sources(cfg: Config) -> list[Path]:
    return [Path(cfg.pretrained.mdm)] if cfg.pretrained.mdm is not None else []


def _tmr_sources(cfg: Config) -> list[Path]:
    p = cfg.pretrained
    if p.tmr is None or p.tmr_stats is None:
        return []
    run, stats = Path(p.tmr), Path(p.tmr_stats)
    return [run / "config.json", *(run / "last_weights" / f"{m}.pt" for m in ("motion_encoder", "text_encoder")),
            stats / "mean.pt", stats / "std.pt"]


def _t2m_sources(cfg: Config) -> list[Path]:
    p = cfg.pretrained
    if p.t2m_evaluator is None or p.t2m_stats is None or p.glove is None:
        return []
    stats, glove = Path(p.t2m_stats), Path(p.glove)
    return [Path(p.t2m_evaluator) / "text_mot_match" / "model" / "finest.tar",
            *(stats / f"{stem}{n}.npy" for stem in ("t2m_", "") for n in ("mean", "std")),
            *(glove / f"our_vab_{n}" for n in ("data.npy", "words.pkl", "idx.pkl"))]


def base_path(cfg: Config) -> Path:
    """Where the run takes its base model from: the import of pretrained.mdm, else the `sopo pretrain` default."""
    from sopo_ray.models.pretrain import base_checkpoint

    if cfg.pretrained.mdm is not None:
        return Path(cfg.workdir) / "base" / "mdm_official" / f"imported-{sources_digest(_mdm_sources(cfg))}.pt"
    return base_checkpoint(cfg)


def reward_path(cfg: Config) -> Path:
    """Where the run takes its reward model from: reward.checkpoint if set, the import of pretrained.tmr, else
    `sopo reward train`'s."""
    if cfg.reward.checkpoint is not None:
        return Path(cfg.reward.checkpoint)
    if cfg.pretrained.tmr is not None:
        return Path(cfg.workdir) / "reward" / f"tmr_official-{sources_digest(_tmr_sources(cfg))}.pt"
    return Path(cfg.workdir) / "reward" / "reward.pt"


def evaluator_path(cfg: Config) -> Path:
    """Where the run takes its evaluator from: the import of pretrained.t2m_evaluator (with the dataset's caption
    tokens), else the `sopo evaluate` default."""
    if cfg.pretrained.t2m_evaluator is not None:
        from sopo_ray.data.humanml3d import folder_id

        data = folder_id(Path(cfg.data.root), cfg.data.source, cfg.data.max_frames)
        return Path(cfg.workdir) / "evaluator" / f"t2m_official-{sources_digest(_t2m_sources(cfg), data)}.pt"
    return Path(cfg.workdir) / "evaluator" / "evaluator.pt"


def build_base(cfg: Config, path: Path, train: Any = None, console: Console | None = None) -> Path:
    """Import pretrained.mdm to `path`, or pretrain the base model into path's folder."""
    from sopo_ray.data import load_dataset

    train = train if train is not None else load_dataset(cfg.data, "train")
    if cfg.pretrained.mdm is None:
        from sopo_ray.models.pretrain import pretrain

        return pretrain(cfg, path.parent, dataset=train, console=console)
    from sopo_ray.models.mdm_import import import_mdm

    (console or Console()).print(f"[bold]importing the released MDM[/] {cfg.pretrained.mdm} -> {path}")
    return import_mdm(cfg, Path(cfg.pretrained.mdm), path, train.mean, train.std, train.data_id,
                      sources_digest(_mdm_sources(cfg)))


def build_reward(cfg: Config, path: Path, console: Console | None = None) -> Path:
    """Import pretrained.tmr to `path`, or train the reward model there."""
    if cfg.pretrained.tmr is None:
        from sopo_ray.reward.training import train_reward

        return train_reward(cfg, path)
    from sopo_ray.reward.tmr_official import import_tmr

    (console or Console()).print(f"[bold]importing the released TMR[/] {cfg.pretrained.tmr} -> {path}")
    return import_tmr(Path(cfg.pretrained.tmr), Path(cfg.pretrained.tmr_stats), path,
                      sources_digest(_tmr_sources(cfg)))


def build_evaluator(cfg: Config, path: Path, console: Console | None = None) -> Path:
    """Import pretrained.t2m_evaluator to `path`, or train the evaluator there."""
    if cfg.pretrained.t2m_evaluator is None:
        from sopo_ray.evaluation.evaluator import train_evaluator

        return train_evaluator(cfg, path)
    from sopo_ray.data.humanml3d import folder_id
    from sopo_ray.evaluation.t2m_official import import_t2m

    p, root = cfg.pretrained, Path(cfg.data.root)
    (console or Console()).print(f"[bold]importing the released T2M evaluator[/] {p.t2m_evaluator} -> {path}")
    data = folder_id(root, cfg.data.source, cfg.data.max_frames)
    return import_t2m(Path(p.t2m_evaluator), Path(p.t2m_stats), Path(p.glove), root / "texts", data, path,
                      sources_digest(_t2m_sources(cfg), data))


def resolve(cfg: Config, console: Console | None = None, need_evaluator: bool = True) -> Artifacts:
    """Load the run's dataset splits and models, building any that are missing (minutes on first use)."""
    from sopo_ray.data import load_dataset
    from sopo_ray.reward.tmr import KINDS as REWARD_KINDS

    console = console or Console()
    train = load_dataset(cfg.data, "train")
    test = load_dataset(cfg.data, "test")
    base = base_path(cfg)
    if not base.is_file():
        if cfg.pretrained.mdm is None:
            console.print(f"[bold]building the base model[/] ({cfg.model.kind}, {cfg.pretrain.steps} steps) -> {base}")
        build_base(cfg, base, train, console)
    reward = reward_path(cfg)
    if cfg.reward.checkpoint is not None and not reward.is_file():
        raise CheckpointError(f"reward.checkpoint {reward} not found; train one with `sopo reward train --out "
                              f"{reward}` or unset reward.checkpoint")
    if not reward.is_file():
        if cfg.pretrained.tmr is None:
            console.print(f"[bold]building the reward model[/] ({cfg.reward.steps} steps) -> {reward}")
        build_reward(cfg, reward, console)
    evaluator = evaluator_path(cfg)
    if need_evaluator and not evaluator.is_file():
        if cfg.pretrained.t2m_evaluator is None:
            console.print(f"[bold]building the evaluator[/] ({cfg.evaluator.steps} steps) -> {evaluator}")
        build_evaluator(cfg, evaluator, console)
    base_payload = sample_as_configured(load_checkpoint(base, ("mdm", "mld")), cfg)
    reward_payload = load_checkpoint(reward, REWARD_KINDS)
    check_same_dataset(base, base_payload, reward, reward_payload, train.data_id)
    check_base_matches(cfg, base, base_payload)
    return Artifacts(train, test, base, base_payload, reward, reward_payload, evaluator)


def sample_as_configured(payload: dict[str, Any], cfg: Config) -> dict[str, Any]:
    """`payload` (a generator checkpoint) set to sample as `cfg` says: how to sample (`diffusion.fast_sampler`,
    `diffusion.ddim_eta`) is the run's choice, not the checkpoint's, and every policy built from it samples so."""
    payload["config"].setdefault("diffusion", {}).update(fast_sampler=cfg.diffusion.fast_sampler,
                                                         ddim_eta=cfg.diffusion.ddim_eta)
    return payload


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
