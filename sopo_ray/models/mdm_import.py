"""Importing a released MDM checkpoint (humanml_enc_512_50steps/model000750000.pt) as a sopo_ray base model: the
file is read with weights_only=True, its args.json (when beside it) checked against the config, and every key
mapped one-to-one onto `mdm_official.OfficialMDM` inside a `MotionGenerator` (model.architecture=mdm_official)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from sopo_ray.checkpoint import load_foreign, match_state
from sopo_ray.config import Config
from sopo_ray.errors import CheckpointError, ConfigError
from sopo_ray.models.generator import MotionGenerator, save_generator
from sopo_ray.models.mdm_official import OfficialMDM

PE_KEYS = ("sequence_pos_encoder.pe", "embed_timestep.sequence_pos_encoder.pe")
GET_IT = ("download humanml_enc_512_50steps from the MDM README (GuyTevet/motion-diffusion-model) and point "
          "pretrained.mdm at its model000750000.pt")


def check_mdm_args(cfg: Config, args_path: Path) -> None:
    """ConfigError if the released model's args.json disagrees with the config it is imported under."""
    args = json.loads(args_path.read_text())
    dataset = {"humanml3d": "humanml", "kitml": "kit"}.get(cfg.data.source)
    wanted = {
        "arch": ("trans_enc", "model.architecture=mdm_official reads MDM's trans_enc only"),
        "latent_dim": (cfg.model.latent_dim, f"--set model.latent_dim={args.get('latent_dim')}"),
        "layers": (cfg.model.num_layers, f"--set model.num_layers={args.get('layers')}"),
        "diffusion_steps": (cfg.diffusion.num_timesteps,
                            f"--set diffusion.num_timesteps={args.get('diffusion_steps')}"),
        "noise_schedule": (cfg.diffusion.schedule, f"--set diffusion.schedule={args.get('noise_schedule')}"),
        "mask_frames": (cfg.model.mask_frames, f"--set model.mask_frames={str(args.get('mask_frames')).lower()}"),
        "text_encoder_type": ("clip", "only MDM's CLIP models are supported"),
        "emb_policy": ("add", "only MDM's added condition token is supported"),
        "pred_len": (0, "prefix-completion (DiP) models are not supported"),
        "dataset": (dataset, f"set data.source to the dataset the model was trained on ({args.get('dataset')})"),
    }
    defaults = {"mask_frames": False, "text_encoder_type": "clip", "emb_policy": "add", "pred_len": 0}
    for key, (value, fix) in wanted.items():
        theirs = args.get(key, defaults.get(key))
        if theirs is not None and theirs != value:
            raise ConfigError(f"{args_path} says {key}={theirs!r} but this config needs {value!r}; {fix}")
    if cfg.model.num_heads != 4 or cfg.model.ff_dim != 1024:
        raise ConfigError(f"MDM always uses 4 heads and a feed-forward width of 1024, this config has "
                          f"{cfg.model.num_heads} and {cfg.model.ff_dim}; set model.num_heads=4 model.ff_dim=1024")


def released_state(raw: Any, source: Path) -> dict[str, Tensor]:
    """The denoiser's state dict inside a released MDM file: the plain dict, or the EMA average when the file holds
    {'model', 'model_avg'} (MDM samples with the average)."""
    if isinstance(raw, dict) and "model_avg" in raw:
        raw = raw["model_avg"]
    elif isinstance(raw, dict) and isinstance(raw.get("model"), dict):
        raw = raw["model"]
    if not isinstance(raw, dict) or not all(isinstance(v, torch.Tensor) for v in raw.values()):
        raise CheckpointError(f"{source} is not an MDM state dict (expected a dict of tensors); {GET_IT}")
    return {k: v for k, v in raw.items() if not k.startswith("clip_model.")}


def official_to_sopo(denoiser: OfficialMDM, state: dict[str, Tensor], source: Path) -> dict[str, Tensor]:
    """Released MDM state dict -> `denoiser`'s state dict: every key checked (names and shapes); the two fixed
    sinusoidal tables must equal ours on the rows the model uses."""
    fix = "the file is not the MDM trans_enc this config describes (model.latent_dim, num_layers, ff_dim)"
    expected = {k: v.shape for k, v in denoiser.state_dict().items()}
    tables = {k: state.pop(k) for k in PE_KEYS if k in state}
    match_state(expected, state, source, fix)
    for key in PE_KEYS:
        if key not in tables:
            raise CheckpointError(f"{source}: missing '{key}' (MDM's fixed position table); {fix}")
        rows = tables[key].reshape(tables[key].shape[0], -1)[: denoiser.pe.shape[0]]
        if rows.shape != denoiser.pe.shape or not torch.allclose(rows, denoiser.pe, atol=1e-4):
            raise CheckpointError(f"{source}: '{key}' is not MDM's sinusoidal table of width "
                                  f"{denoiser.pe.shape[1]}; {fix}")
    return state


def import_mdm(cfg: Config, source: Path, out: Path, mean: np.ndarray, std: np.ndarray, data_id: str,
               source_digest: str) -> Path:
    """Import a released MDM checkpoint as a sopo_ray base model: weights_only load, args.json check (when it lies
    beside the file), every key mapped one-to-one into `model.architecture=mdm_official`, then an atomic
    checkpoint at `out` (kind "mdm") with the dataset's Mean/Std as the generator's normalisation."""
    if (source.parent / "args.json").is_file():
        check_mdm_args(cfg, source.parent / "args.json")
    state = released_state(load_foreign(source, "the released MDM checkpoint", GET_IT), source)
    gen = MotionGenerator(cfg, mean, std)
    gen.denoiser.load_state_dict(official_to_sopo(gen.denoiser, state, source))
    return save_generator(out, gen.eval(), cfg, data_id, imported_from=str(source), source_digest=source_digest)
