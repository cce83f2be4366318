"""The released MDM (Tevet et al., ICLR 2023), parameter for parameter, and the import of its checkpoints.

`OfficialMDM` is MDM's `trans_enc` denoiser (model/mdm.py of GuyTevet/motion-diffusion-model) with the same module
names, so a released state dict such as humanml_enc_512_50steps/model000750000.pt maps one-to-one onto it:

    input_process.poseEmbedding        Linear(263 -> d), one token per frame
    embed_timestep.time_embed.{0,2}    Linear-SiLU-Linear over the sinusoidal table's row t
    embed_text                         Linear(512 -> d) over the CLIP ViT-B/32 text feature
    seqTransEncoder.layers.{i}.*       post-norm transformer encoder layers (GELU, 4 heads, ff 1024 in MDM)
    output_process.poseFinal           Linear(d -> 263), read as x0 (MDM predicts x0)

The condition token is time embedding + projected text; it is prepended to the frame tokens and the sinusoidal
table (rows 0..L) is added to the whole sequence. For classifier-free guidance MDM zeroes the CLIP feature before
`embed_text` (its "null condition" is embed_text's bias). The fixed sinusoidal tables (`sequence_pos_encoder.pe`
and its alias `embed_timestep.sequence_pos_encoder.pe`) are checked against ours at import, not stored. Without
`mask_frames` (the released 50-step model) attention sees every frame, padding included.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from sopo_ray.checkpoint import load_foreign, match_state
from sopo_ray.config import Config
from sopo_ray.errors import CheckpointError, ConfigError
from sopo_ray.models.inference import encoder_forward, supports_fast

PE_KEYS = ("sequence_pos_encoder.pe", "embed_timestep.sequence_pos_encoder.pe")
GET_IT = ("download humanml_enc_512_50steps from the MDM README (GuyTevet/motion-diffusion-model) and point "
          "pretrained.mdm at its model000750000.pt")


def mdm_position_table(length: int, dim: int) -> Tensor:
    """MDM's sinusoidal table [length, dim]: sin on even channels, cos on odd ones, frequencies 10000^(-2i/dim)."""
    position = torch.arange(length, dtype=torch.float32)[:, None]
    freq = torch.exp(torch.arange(0, dim, 2, dtype=torch.float32) * (-math.log(10000.0) / dim))
    table = torch.zeros(length, dim)
    table[:, 0::2] = torch.sin(position * freq)
    table[:, 1::2] = torch.cos(position * freq)
    return table


class OfficialMDM(nn.Module):
    """f(x_t, t, c) with MDM's layout: [B, L, C] noisy features -> [B, L, C] predicted x0 (see module docstring).

    Same call signature as `MotionDenoiser`, so `MotionGenerator` drives either.
    """

    def __init__(self, feature_dim: int, text_dim: int, latent_dim: int, num_layers: int, num_heads: int,
                 ff_dim: int, dropout: float, max_len: int, mask_frames: bool) -> None:
        super().__init__()
        self.max_len = max_len
        self.mask_frames = mask_frames
        self.input_process = nn.ModuleDict({"poseEmbedding": nn.Linear(feature_dim, latent_dim)})
        self.embed_timestep = nn.ModuleDict({"time_embed": nn.Sequential(
            nn.Linear(latent_dim, latent_dim), nn.SiLU(), nn.Linear(latent_dim, latent_dim))})
        self.embed_text = nn.Linear(text_dim, latent_dim)
        layer = nn.TransformerEncoderLayer(latent_dim, num_heads, ff_dim, dropout, activation="gelu",
                                           batch_first=True)
        self.seqTransEncoder = nn.TransformerEncoder(layer, num_layers, enable_nested_tensor=False)
        self.output_process = nn.ModuleDict({"poseFinal": nn.Linear(latent_dim, feature_dim)})
        self.dropout = nn.Dropout(dropout)
        self.register_buffer("pe", mdm_position_table(max_len + 1, latent_dim), persistent=False)

    def condition(self, t: Tensor, text_emb: Tensor, keep_cond: Tensor | None) -> Tensor:
        """The condition token [B, d]: time embedding + projected text (zeroed text where keep_cond is False)."""
        if keep_cond is not None:
            text_emb = text_emb * keep_cond[:, None].to(text_emb.dtype)
        return self.embed_timestep["time_embed"](self.pe[t]) + self.embed_text(text_emb)

    def embed(self, x_t: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        """Frame tokens [B, L, d] (one per frame, projected) and their validity [B, L] (used with mask_frames)."""
        if x_t.shape[1] > self.max_len:
            raise ValueError(f"sequence of {x_t.shape[1]} frames exceeds the denoiser's {self.max_len}")
        return self.input_process["poseEmbedding"](x_t), mask

    def encode(self, cond: Tensor, tokens: Tensor, valid: Tensor, fast: bool = False) -> Tensor:
        """The transformer over [condition token, frame tokens] + the position table -> frame features [B, L, d],
        the input of the linear `project`. `fast` (eval mode) runs `inference.encoder_forward`."""
        h = self.dropout(torch.cat([cond[:, None], tokens], dim=1) + self.pe[: tokens.shape[1] + 1])
        valid = torch.cat([torch.ones_like(valid[:, :1]), valid], dim=1) if self.mask_frames else None
        if fast and supports_fast(self.seqTransEncoder):
            h = encoder_forward(self.seqTransEncoder, h, valid)
        else:
            h = self.seqTransEncoder(h, src_key_padding_mask=None if valid is None else ~valid)
        return h[:, 1:]

    def project(self, h: Tensor, length: int) -> Tensor:
        """Frame features [B, L, d] -> predicted x0 [B, L, C]; linear, so guidance may come before it."""
        return self.output_process["poseFinal"](h)

    def forward(self, x_t: Tensor, t: Tensor, text_emb: Tensor, mask: Tensor,
                keep_cond: Tensor | None = None, fast: bool = False) -> Tensor:
        """x_t [B, L, C], t [B] int, text_emb [B, E], mask [B, L] valid frames, keep_cond [B] -> x0 [B, L, C]."""
        tokens, valid = self.embed(x_t, mask)
        return self.project(self.encode(self.condition(t, text_emb, keep_cond), tokens, valid, fast), x_t.shape[1])


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
    from sopo_ray.models.generator import MotionGenerator, save_generator

    if (source.parent / "args.json").is_file():
        check_mdm_args(cfg, source.parent / "args.json")
    state = released_state(load_foreign(source, "the released MDM checkpoint", GET_IT), source)
    gen = MotionGenerator(cfg, mean, std)
    gen.denoiser.load_state_dict(official_to_sopo(gen.denoiser, state, source))
    return save_generator(out, gen.eval(), cfg, data_id, imported_from=str(source), source_digest=source_digest)
