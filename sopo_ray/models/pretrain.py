"""Pretraining of the base model: MDM (denoiser on features) or MLD (VAE first, then the latent denoiser).

One global step counter runs over the phases (MLD: `pretrain.vae_steps` VAE steps, then `pretrain.steps`
denoiser steps; MDM: only the latter). Each step's batch, timesteps, noise and condition dropout come from a
generator seeded with (run seed, step), and the checkpoint holds weights, optimizer, step and torch RNG, so a
resumed run continues exactly where the last checkpoint left it. Outputs in `out_dir`:
`last.pt` (resumable, every `checkpoint_every` steps), `base.pt` (the final base model), `metrics.jsonl`.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from torch import Tensor

from sopo_ray.checkpoint import load_checkpoint
from sopo_ray.config import Config, config_to_dict
from sopo_ray.errors import CheckpointError, DataError
from sopo_ray.lr_schedule import warmup_cosine
from sopo_ray.models.generator import (
    MotionGenerator,
    build_generator,
    lengths_to_mask,
    load_state_checked,
    save_generator,
)
from sopo_ray.models.text_encoder import get_text_encoder, text_cache_path
from sopo_ray.tracking import MetricsWriter

# Config sections a resumed run must share with the run that wrote the checkpoint.
_FROZEN_SECTIONS = ("model", "diffusion")


@dataclass
class TrainingSet:
    """The train split as tensors: normalised features, lengths, and one text embedding per caption."""

    x: Tensor            # [N, T, D] normalised, zero past length
    lengths: Tensor      # [N] int64
    text_emb: Tensor     # [M, E] (or [M, 1 + n, E] with words) one row per distinct caption
    caption_ids: Tensor  # [N, C] row of text_emb for caption j of motion i (-1 past the motion's captions)
    caption_count: Tensor  # [N] captions per motion

    def batch(self, gen: torch.Generator, size: int, buckets: int = 1) -> tuple[Tensor, Tensor, Tensor]:
        """A random batch (x [B, T_b, D] cropped to the longest member, lengths [B], text_emb [B, ...]).

        With `buckets = k > 1`, k * B motions are drawn uniformly, sorted by length, cut into k blocks of B, and
        one block is used: every motion is still drawn with probability B / N, but a batch holds similar
        lengths, so less compute goes to padding.
        """
        idx = torch.randint(0, self.x.shape[0], (size * buckets,), generator=gen)
        if buckets > 1:
            block = int(torch.randint(0, buckets, (1,), generator=gen))
            idx = idx[torch.argsort(self.lengths[idx], stable=True)][block * size:(block + 1) * size]
        pick = (torch.rand(size, generator=gen) * self.caption_count[idx]).long()
        lengths = self.lengths[idx]
        return self.x[idx, : int(lengths.max())], lengths, self.text_emb[self.caption_ids[idx, pick]]


def build_training_set(gen: MotionGenerator, dataset: Any) -> TrainingSet:
    """Normalise a MotionDataset's features with the generator's statistics and embed all its captions."""
    if len(dataset) == 0:
        raise DataError("the training split is empty; build the dataset with more motions (data.size)")
    if dataset.feature_dim != gen.feature_dim:
        raise DataError(f"dataset has {dataset.feature_dim}-dim features but the model expects {gen.feature_dim}")
    lengths = torch.as_tensor(np.asarray(dataset.lengths), dtype=torch.long)
    x = torch.as_tensor(np.array(dataset.features[:, : gen.max_frames], dtype=np.float32))
    lengths = lengths.clamp(max=gen.max_frames)
    with torch.no_grad():
        x = gen.normalize(x) * lengths_to_mask(lengths, x.shape[1])[..., None]
    unique = sorted({c for caps in dataset.captions for c in caps})
    if not unique or any(len(caps) == 0 for caps in dataset.captions):
        raise DataError("every training motion needs at least one caption; check the dataset's texts")
    row = {c: i for i, c in enumerate(unique)}
    width = max(len(caps) for caps in dataset.captions)
    ids = torch.full((len(dataset), width), -1, dtype=torch.long)
    for i, caps in enumerate(dataset.captions):
        ids[i, : len(caps)] = torch.tensor([row[c] for c in caps])
    count = torch.tensor([len(caps) for caps in dataset.captions], dtype=torch.long)
    return TrainingSet(x, lengths, gen.encode_text(unique), ids, count)


def _phases(cfg: Config) -> list[tuple[str, int]]:
    """[(phase name, steps)] in order: ('vae', n) for MLD, then ('denoiser', n)."""
    phases = [("vae", cfg.pretrain.vae_steps)] if cfg.model.kind == "mld" else []
    return [*phases, ("denoiser", cfg.pretrain.steps)]


def _phase_at(cfg: Config, step: int) -> tuple[str, int, int]:
    """(phase, step within the phase, steps of the phase) for a global step."""
    start = 0
    for name, steps in _phases(cfg):
        if step < start + steps:
            return name, step - start, steps
        start += steps
    name, steps = _phases(cfg)[-1]
    return name, steps, steps


def _optimizer(gen: MotionGenerator, phase: str, cfg: Config) -> torch.optim.AdamW:
    module = gen.latent.vae if phase == "vae" else gen.denoiser
    return torch.optim.AdamW(module.parameters(), lr=cfg.pretrain.lr, weight_decay=cfg.pretrain.weight_decay)


def _check_resumable(payload: dict[str, Any], cfg: Config, path: Path) -> None:
    """CheckpointError if the checkpoint in `path` was written with other model/diffusion settings."""
    mine = config_to_dict(cfg)
    for section in _FROZEN_SECTIONS:
        theirs = payload["config"].get(section, {})
        for key, value in mine[section].items():
            if theirs.get(key) != value:
                raise CheckpointError(
                    f"{path} was trained with {section}.{key}={theirs.get(key)!r}, this config has {value!r}; "
                    f"delete {path.parent} or pretrain into another --out")


class Pretrainer:
    """State of one pretraining run: model, optimizer, step, data; `run()` trains to the configured steps."""

    def __init__(self, cfg: Config, out_dir: str | Path, dataset: Any, console: Console | None = None) -> None:
        self.cfg = cfg
        self.out_dir = Path(out_dir)
        self.dataset = dataset
        self.console = console or Console(stderr=True)
        self.total = sum(steps for _, steps in _phases(cfg))
        self.gen = build_generator(cfg, dataset)
        self.step = 0
        self.phase = _phase_at(cfg, 0)[0]
        self.optimizer = _optimizer(self.gen, self.phase, cfg)
        self.last_path = self.out_dir / "last.pt"
        if self.last_path.is_file():
            self._resume()

    def _resume(self) -> None:
        payload = load_checkpoint(self.last_path, self.cfg.model.kind, self.dataset.data_id)
        _check_resumable(payload, self.cfg, self.last_path)
        load_state_checked(self.gen, payload["state"], self.last_path)
        train = payload["train_state"]
        self.step = int(train["step"])
        self.phase = _phase_at(self.cfg, self.step)[0]
        self.optimizer = _optimizer(self.gen, self.phase, self.cfg)
        if train["phase"] == self.phase:
            self.optimizer.load_state_dict(train["optimizer"])
        torch.set_rng_state(train["rng"])
        self.console.print(f"resuming pretraining from {self.last_path} at step {self.step}/{self.total}")

    def _save_resumable(self) -> None:
        train_state = {"step": self.step, "phase": self.phase, "optimizer": self.optimizer.state_dict(),
                       "rng": torch.get_rng_state()}
        save_generator(self.last_path, self.gen, self.cfg, self.dataset.data_id, train_state=train_state)

    def _enter_denoiser_phase(self, data: TrainingSet) -> TrainingSet:
        """MLD: freeze the VAE, set the latent scale, and replace the features by their latents."""
        if self.gen.latent is None:
            return data
        self.gen.latent.freeze()
        scale = self.gen.latent.fit_scale(data.x, data.lengths)
        with torch.no_grad():
            z = torch.cat([self.gen.latent.encode(data.x[i:i + 256], data.lengths[i:i + 256])
                           for i in range(0, data.x.shape[0], 256)])
        self.console.print(f"VAE trained; latent scale {scale:.4f}; training the latent denoiser")
        return TrainingSet(z, torch.full_like(data.lengths, z.shape[1]), data.text_emb, data.caption_ids,
                           data.caption_count)

    def _train_step(self, data: TrainingSet, phase_step: int, phase_steps: int) -> dict[str, float]:
        p = self.cfg.pretrain
        rng = torch.Generator().manual_seed(self.cfg.seed * 1_000_003 + self.step)
        lr = warmup_cosine(phase_step, phase_steps, p.warmup_steps, p.lr, floor=0.1)   # decays to 10% of lr
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        x, lengths, text_emb = data.batch(rng, p.batch_size, p.length_buckets)
        if self.phase == "vae":
            loss, metrics = self.gen.latent.vae.loss(x, lengths, self.cfg.model.vae_kl_weight, rng)
        else:
            if self.gen.full_length:  # the released MDM's layout trains on all max_frames frames, padding included
                x = torch.nn.functional.pad(x, (0, 0, 0, self.gen.max_frames - x.shape[1]))
            mask = lengths_to_mask(lengths, x.shape[1])
            t = self.gen.diffusion.sample_timesteps(x.shape[0], rng)
            noise = torch.randn(x.shape, generator=rng)
            keep = torch.rand(x.shape[0], generator=rng) >= self.cfg.model.cond_drop_prob
            loss = self.gen.denoise_error(x, mask, t, noise, text_emb, keep).mean()
            metrics = {"loss/denoise": loss.item()}
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(
            [q for group in self.optimizer.param_groups for q in group["params"]], p.grad_clip)
        self.optimizer.step()
        return {**metrics, "optim/lr": lr, "optim/grad_norm": float(grad_norm)}

    def run(self, stop_at: int | None = None) -> Path:
        """Train to the configured number of steps (from the resumed step) and write `base.pt`.

        With `stop_at`, stop after that global step instead, write `last.pt` and return its path (a time-boxed
        run that a later `run()` resumes).
        """
        base_path = self.out_dir / "base.pt"
        end = self.total if stop_at is None else min(stop_at, self.total)
        if self.step >= self.total and base_path.is_file():
            self.console.print(f"base model already trained: {base_path}")
            return base_path
        self.gen.train()
        encoder = get_text_encoder(self.cfg.model.text_encoder)
        cache = text_cache_path(self.cfg.workdir, self.cfg.model.text_encoder)
        known = encoder.load_cache(cache)
        data = build_training_set(self.gen, self.dataset)
        if encoder.cache_size > known:
            encoder.save_cache(cache)
        if self.phase == "denoiser":
            data = self._enter_denoiser_phase(data)
        metrics_log = MetricsWriter(self.out_dir / "metrics.jsonl")
        columns = (TextColumn("[bold]pretrain {task.fields[phase]}"), BarColumn(), MofNCompleteColumn(),
                   TextColumn("loss {task.fields[loss]:.4f}"), TimeElapsedColumn(), TimeRemainingColumn())
        loss_ema = float("nan")
        with Progress(*columns, console=self.console, transient=False) as progress:
            task = progress.add_task("pretrain", total=self.total, completed=self.step, phase=self.phase,
                                     loss=loss_ema)
            while self.step < end:
                phase, phase_step, phase_steps = _phase_at(self.cfg, self.step)
                if phase != self.phase:
                    self.phase = phase
                    self.optimizer = _optimizer(self.gen, phase, self.cfg)
                    data = self._enter_denoiser_phase(data)
                    loss_ema = float("nan")
                start = time.perf_counter()
                metrics = self._train_step(data, phase_step, phase_steps)
                loss = next(iter(metrics.values()))
                loss_ema = loss if math.isnan(loss_ema) else 0.95 * loss_ema + 0.05 * loss
                self.step += 1
                if self.step % self.cfg.pretrain.log_every == 0 or self.step == self.total:
                    metrics_log.log(self.step, phase=phase, **metrics, **{"loss/ema": loss_ema},
                                    **{"timing/step_s": time.perf_counter() - start})
                if self.step % self.cfg.pretrain.checkpoint_every == 0 and self.step < self.total:
                    self._save_resumable()
                progress.update(task, completed=self.step, phase=phase, loss=loss_ema)
        metrics_log.close()
        self.gen.eval()
        if self.step < self.total:
            self._save_resumable()
            return self.last_path
        lengths = np.asarray(self.dataset.lengths)
        self._save_resumable()
        save_generator(base_path, self.gen, self.cfg, self.dataset.data_id, pretrain_steps=self.step,
                       length_median=int(np.median(lengths)), final_loss=loss_ema)
        self.console.print(f"base model written to {base_path}")
        return base_path


def pretrain(cfg: Config, out_dir: str | Path, dataset: Any = None, console: Console | None = None) -> Path:
    """Pretrain the base model of `cfg` into `out_dir` (resuming from `out_dir/last.pt`); returns `base.pt`.

    `dataset` defaults to the train split of `cfg.data` (`sopo_ray.data.load_dataset`).
    """
    if cfg.torch_threads:
        torch.set_num_threads(cfg.torch_threads)
    if dataset is None:
        from sopo_ray.data import load_dataset

        dataset = load_dataset(cfg.data, "train")
    return Pretrainer(cfg, out_dir, dataset, console).run()


def base_dir(cfg: Config) -> Path:
    """Where `sopo pretrain` writes by default and where the trainer looks: {workdir}/base/{model.kind}
    ({workdir}/base/mdm_official for the released MDM's architecture)."""
    official = cfg.model.architecture == "mdm_official"
    return Path(cfg.workdir) / "base" / (cfg.model.architecture if official else cfg.model.kind)


def base_checkpoint(cfg: Config) -> Path:
    """The default base-model checkpoint of `cfg`: {workdir}/base/{model.kind}/base.pt."""
    return base_dir(cfg) / "base.pt"
