"""The released TMR (Petrovich, Black, Varol, ICCV 2023) as SoPo's reward model, and the import of its weights.

A released TMR folder (models/tmr_humanml3d_guoh3dfeats of Mathux/TMR) holds config.json and last_weights/ with
one state dict per module. Scoring needs two of them, each an `ACTORStyleEncoder` (src/model/actor.py there):

    projection            Linear(nfeats -> 256)   (motion: 263 raw HumanML3D features; text: 768 DistilBERT)
    tokens                [2, 256] learned mu / logvar tokens prepended to the sequence
    seqTransEncoder.*     6 post-norm GELU layers, 4 heads, ff 1024, padding masked

plus TMR's sinusoidal positions (not saved) on the whole sequence. The embedding is the output at the mu token
(TMR's `encode(sample_mean=True)`). Motions are normalised with TMR's own per-dimension statistics
(stats/humanml3d/guoh3dfeats/{mean,std}.pt, as (x - mean) / (std + 1e-12)); text goes through frozen
distilbert-base-uncased token features (`sopo_ray/models/token_encoder.py`). The reward is TMR's score
(cos + 1) / 2. The motion decoder (last_weights/motion_decoder.pt) only trains TMR and is not read.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sopo_ray.checkpoint import load_foreign, match_state, save_checkpoint
from sopo_ray.errors import CheckpointError
from sopo_ray.reward.tmr import OFFICIAL_KIND, as_motion_batch, sinusoidal_positions, valid_mask

KIND = OFFICIAL_KIND
EPS = 1e-12  # TMR's Normalizer
DEFAULTS = {"latent_dim": 256, "ff_size": 1024, "num_layers": 6, "num_heads": 4, "vae": True}  # configs/model/temos
GET_IT = ("get the pretrained TMR with the TMR repository's prepare/download_pretrain_models.sh and point "
          "pretrained.tmr at models/tmr_humanml3d_guoh3dfeats and pretrained.tmr_stats at stats/humanml3d/guoh3dfeats")


class ActorStyleEncoder(nn.Module):
    """TMR's encoder: `[B, T, nfeats]` + valid mask -> `[B, tokens, d]` outputs at the learned tokens."""

    def __init__(self, nfeats: int, latent_dim: int, ff_size: int, num_layers: int, num_heads: int,
                 num_tokens: int, dropout: float = 0.1) -> None:
        super().__init__()
        self.projection = nn.Linear(nfeats, latent_dim)
        self.tokens = nn.Parameter(torch.zeros(num_tokens, latent_dim))
        layer = nn.TransformerEncoderLayer(latent_dim, num_heads, ff_size, dropout, activation="gelu",
                                           batch_first=True)
        self.seqTransEncoder = nn.TransformerEncoder(layer, num_layers, enable_nested_tensor=False)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        b, n = x.shape[0], self.tokens.shape[0]
        h = torch.cat([self.tokens.expand(b, -1, -1), self.projection(x)], dim=1)
        h = self.dropout(h + sinusoidal_positions(h.shape[1], h.shape[-1], h.device))
        padding = torch.cat([torch.zeros(b, n, dtype=torch.bool, device=x.device), ~mask], dim=1)
        return self.seqTransEncoder(h, src_key_padding_mask=padding)[:, :n]


class OfficialTMRReward(nn.Module):
    """TMR's motion and text encoders with TMR's own normaliser; the same interface as `TMRReward`."""

    def __init__(self, mean: Tensor | np.ndarray, std: Tensor | np.ndarray, latent_dim: int = 256,
                 ff_size: int = 1024, num_layers: int = 6, num_heads: int = 4, vae: bool = True,
                 text_dim: int = 768) -> None:
        super().__init__()
        self.register_buffer("mean", torch.as_tensor(mean, dtype=torch.float32).reshape(-1).clone())
        self.register_buffer("std", torch.as_tensor(std, dtype=torch.float32).reshape(-1).clone())
        self.arch: dict[str, Any] = {"latent_dim": latent_dim, "ff_size": ff_size, "num_layers": num_layers,
                                     "num_heads": num_heads, "vae": vae, "text_dim": text_dim}
        sizes = (latent_dim, ff_size, num_layers, num_heads, 2 if vae else 1)
        self.motion_encoder = ActorStyleEncoder(int(self.mean.numel()), *sizes)
        self.text_encoder = ActorStyleEncoder(text_dim, *sizes)

    @property
    def feature_dim(self) -> int:
        return int(self.mean.numel())

    @property
    def device(self) -> torch.device:
        return self.mean.device

    def encode_motion(self, features: Tensor | np.ndarray, lengths: Tensor | np.ndarray | list[int]) -> Tensor:
        """Un-normalised features `[B, T, D]` (ignored past `lengths`) -> unit vectors `[B, d]` (TMR's mu)."""
        x, n = as_motion_batch(features, lengths, self.device)
        if x.shape[-1] != self.feature_dim:
            raise ValueError(f"TMR expects {self.feature_dim}-dim features, got {x.shape[-1]}")
        mask = valid_mask(n, x.shape[1])
        x = torch.where(mask[..., None], (x - self.mean) / (self.std + EPS), torch.zeros((), device=x.device))
        return F.normalize(self.motion_encoder(x, mask)[:, 0], dim=-1)

    def encode_text(self, captions: list[str]) -> Tensor:
        """Captions -> unit vectors `[B, d]` through DistilBERT's token features and TMR's text encoder."""
        from sopo_ray.models.token_encoder import get_token_encoder

        tokens, n = get_token_encoder("distilbert").encode(list(captions))
        tokens, n = tokens.to(self.device), n.to(self.device)
        return F.normalize(self.text_encoder(tokens, valid_mask(n, tokens.shape[1]))[:, 0], dim=-1)

    @torch.no_grad()
    def score(self, features: Tensor | np.ndarray, lengths: Tensor | np.ndarray | list[int],
              captions: list[str], motion_index: Any = None) -> Tensor:
        """The reward r(x, c) = (cos(z_text, z_motion) + 1) / 2 in [0, 1], shape `[B]` (`motion_index`: read only
        by the oracle control, see `TMRReward.score`)."""
        if len(captions) != len(features):
            raise ValueError(f"got {len(features)} motions but {len(captions)} captions")
        z = (self.encode_motion(features, lengths) * self.encode_text(captions)).sum(-1)
        return (z.clamp(-1.0, 1.0) + 1.0) / 2.0

    @torch.no_grad()
    def motion_similarity(self, features_a: Tensor | np.ndarray, lengths_a: Tensor | np.ndarray | list[int],
                          features_b: Tensor | np.ndarray, lengths_b: Tensor | np.ndarray | list[int]) -> Tensor:
        """Motion-to-motion score (cos(z_a, z_b) + 1) / 2 in [0, 1], row by row, shape `[B]`."""
        if len(features_a) != len(features_b):
            raise ValueError(f"motion_similarity pairs rows: got {len(features_a)} and {len(features_b)}")
        z = (self.encode_motion(features_a, lengths_a) * self.encode_motion(features_b, lengths_b)).sum(-1)
        return (z.clamp(-1.0, 1.0) + 1.0) / 2.0


def _sizes(run_dir: Path) -> dict[str, Any]:
    """Encoder sizes from the run's config.json (TMR's defaults when it is absent); both encoders must agree."""
    path = run_dir / "config.json"
    if not path.is_file():
        return dict(DEFAULTS)
    model = json.loads(path.read_text()).get("model", {})
    found = []
    for name in ("motion_encoder", "text_encoder"):
        enc = model.get(name, {})
        if enc.get("activation", "gelu") != "gelu":
            raise CheckpointError(f"{path}: {name} uses activation {enc['activation']!r}, TMR's is gelu; {GET_IT}")
        found.append({k: enc.get(k, v) for k, v in DEFAULTS.items()})
    if found[0] != found[1]:
        raise CheckpointError(f"{path}: motion and text encoders differ in size ({found[0]} vs {found[1]}); "
                              "only TMR's symmetric encoders are supported")
    return found[0]


def import_tmr(run_dir: Path, stats_dir: Path, out: Path, source_digest: str) -> Path:
    """Import a released TMR (weights_only; every key of both encoders checked) as a checkpoint of kind
    "tmr_official" at `out`, with TMR's statistics and sizes."""
    stats = {}
    for name in ("mean", "std"):
        value = load_foreign(stats_dir / f"{name}.pt", "TMR's statistics file", GET_IT)
        if not isinstance(value, torch.Tensor) or value.ndim != 1:
            raise CheckpointError(f"{stats_dir / f'{name}.pt'} is not a 1-D tensor of TMR statistics; {GET_IT}")
        stats[name] = value.float()
    if stats["mean"].shape != stats["std"].shape or not (torch.isfinite(stats["std"]).all() and
                                                         bool((stats["std"] >= 0).all())):
        raise CheckpointError(f"{stats_dir}: mean.pt and std.pt must be finite [D] tensors, std >= 0; {GET_IT}")
    model = OfficialTMRReward(stats["mean"], stats["std"], **_sizes(run_dir))
    state = {"mean": stats["mean"], "std": stats["std"]}
    for name in ("motion_encoder", "text_encoder"):
        path = run_dir / "last_weights" / f"{name}.pt"
        part = load_foreign(path, f"TMR's {name}", GET_IT)
        if not isinstance(part, dict):
            raise CheckpointError(f"{path} is not a state dict; {GET_IT}")
        module = getattr(model, name)
        match_state({k: v.shape for k, v in module.state_dict().items()}, part, path,
                    "the file is not the TMR encoder its config.json describes")
        state.update({f"{name}.{k}": v for k, v in part.items()})
    model.load_state_dict(state)
    return save_checkpoint(out, KIND, {k: v.detach().cpu() for k, v in model.state_dict().items()}, {},
                           None, arch=model.arch, imported_from=str(run_dir), source_digest=source_digest)


def official_reward_from_payload(payload: dict[str, Any]) -> OfficialTMRReward:
    """Rebuild the imported TMR (eval mode) from a loaded checkpoint of kind "tmr_official"."""
    state = payload["state"]
    model = OfficialTMRReward(state["mean"], state["std"], **payload["arch"])
    model.load_state_dict(state)
    return model.eval()
