"""Experiment trackers: TensorBoard and Weights & Biases, fed with the run's metric records (optional extras).

The driver's MetricsWriter hands each record it writes to metrics.jsonl to every tracker, so the trackers show the
same namespaces (loss/*, reward/*, timing/*, health/*, queue/*, rollout/*, eval/*) against the learner step.
Numbers are logged (booleans as 0/1); lists, histograms and text stay in metrics.jsonl. The run's config is
logged once as hyperparameters.

    log.tensorboard: true   <run>/tensorboard/ via torch.utils.tensorboard; view with `tensorboard --logdir runs`
    log.wandb: true         <run>/wandb/ via wandb; offline by default (no network), `wandb sync` uploads later

A resumed run continues its trackers: TensorBoard purges the events after the checkpoint it resumes from, and
W&B continues the same run id (kept in <run>/wandb/run_id).
"""

from __future__ import annotations

import importlib.util
import json
import math
import secrets
from pathlib import Path
from typing import Any

import yaml

from sopo_ray.config import Config, LogConfig, config_to_dict
from sopo_ray.errors import ConfigError

# Keys of a record that are not metrics, and the one plain (un-namespaced) key that is.
_NOT_METRICS = {"step", "time", "event"}
_PLAIN_METRICS = {"version"}
# Scalars the TensorBoard HParams table shows next to each run's hyperparameters.
HPARAM_METRICS = ("loss/loss", "reward/x_l", "reward/mean", "eval/aligned/Reward", "eval/delta/Reward",
                  "eval/aligned/Oracle", "eval/delta/Oracle", "eval/aligned/R@3", "eval/aligned/FID")


def scalars(record: dict[str, Any]) -> dict[str, float]:
    """The record's finite numbers under their metrics.jsonl names (namespaced keys and `version`)."""
    out = {}
    for key, value in record.items():
        if key in _NOT_METRICS or ("/" not in key and key not in _PLAIN_METRICS):
            continue
        if isinstance(value, bool | int | float) and math.isfinite(value):
            out[key] = float(value)
    return out


def flat_config(config: dict[str, Any]) -> dict[str, Any]:
    """`{"optimizer.lr": 1e-4, ...}`: one dotted key per field; lists and mappings as JSON text, None left out."""
    out: dict[str, Any] = {}
    for section, fields in config.items():
        items = fields.items() if isinstance(fields, dict) else [(None, fields)]
        for key, value in items:
            if isinstance(value, list | dict):
                value = json.dumps(value)
            if value is not None:
                out[section if key is None else f"{section}.{key}"] = value
    return out


class TensorBoardTracker:
    """Scalars and the config (as HParams and as text) in TensorBoard event files under `logdir`."""

    def __init__(self, logdir: Path, config: dict[str, Any], *, resume: bool, start_step: int) -> None:
        from torch.utils.tensorboard import SummaryWriter
        from torch.utils.tensorboard.summary import hparams

        self.logdir = Path(logdir)
        # purge_step: TensorBoard hides the earlier session's events from the first step this one logs again.
        self.writer = SummaryWriter(log_dir=str(self.logdir), flush_secs=10,
                                    purge_step=start_step + 1 if resume else None)
        if not resume:
            experiment, session_start, _ = hparams(flat_config(config), dict.fromkeys(HPARAM_METRICS, 0.0))
            self.writer.file_writer.add_summary(experiment)
            self.writer.file_writer.add_summary(session_start)
            text = yaml.safe_dump(config, sort_keys=False)
            self.writer.add_text("config", "\n".join(f"    {line}" for line in text.splitlines()))

    def log(self, step: int, record: dict[str, Any]) -> None:
        for key, value in scalars(record).items():
            self.writer.add_scalar(key, value, step)

    def close(self) -> None:
        self.writer.close()

    def where(self) -> str:
        return f"tensorboard --logdir {self.logdir}"


class WandbTracker:
    """A W&B run (offline or online) in `<run_dir>/wandb`, its x-axis the learner step."""

    def __init__(self, run_dir: Path, name: str, config: dict[str, Any], log: LogConfig, *, resume: bool) -> None:
        import wandb

        folder = Path(run_dir).resolve() / "wandb"
        folder.mkdir(parents=True, exist_ok=True)
        id_file = folder / "run_id"
        run_id = id_file.read_text().strip() if resume and id_file.is_file() else secrets.token_hex(4)
        self.mode = log.wandb_mode
        try:
            self.run = wandb.init(project=log.wandb_project, entity=log.wandb_entity, name=name, id=run_id,
                                  resume="allow", dir=str(folder.parent), mode=self.mode, config=config,
                                  settings=wandb.Settings(console="off", silent=True))
        except Exception as exc:  # noqa: BLE001 - wandb raises many kinds (auth, network, usage)
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise ConfigError(f"W&B could not start a {self.mode} run: {first}; run `wandb login`, or set "
                              f"log.wandb_mode=offline (no network) or log.wandb=false") from None
        id_file.write_text(run_id)
        # Records come at several cadences (steps, pipeline polls): the learner step is the x-axis.
        self.run.define_metric("step")
        self.run.define_metric("*", step_metric="step")

    def log(self, step: int, record: dict[str, Any]) -> None:
        values = scalars(record)
        if values:
            self.run.log({"step": step, **values})

    def close(self) -> None:
        self.run.finish()

    def where(self) -> str:
        if self.mode == "online":
            return str(self.run.url)
        return f"offline; upload with `wandb sync {self.run.settings.sync_dir}`"


def check_available(log: LogConfig) -> None:
    """Refuse, before anything is written, a tracker whose package is not installed."""
    for flag in ("tensorboard", "wandb"):
        if getattr(log, flag) and importlib.util.find_spec(flag) is None:
            raise ConfigError(f"log.{flag} is on but the {flag} package is not installed; "
                              f"pip install 'sopo_ray[{flag}]' or set log.{flag}=false")


def open_trackers(cfg: Config, run_dir: Path, *, resume: bool,
                  start_step: int = 0) -> list[TensorBoardTracker | WandbTracker]:
    """The trackers `cfg.log` asks for, opened on `run_dir` (continuing them when `resume`)."""
    check_available(cfg.log)
    config = config_to_dict(cfg)
    trackers: list[TensorBoardTracker | WandbTracker] = []
    if cfg.log.tensorboard:
        trackers.append(TensorBoardTracker(Path(run_dir) / "tensorboard", config, resume=resume,
                                           start_step=start_step))
    if cfg.log.wandb:
        trackers.append(WandbTracker(Path(run_dir), Path(run_dir).name, config, cfg.log, resume=resume))
    return trackers
