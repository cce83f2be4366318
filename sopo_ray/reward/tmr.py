"""TMR-style reward model r(x, c): a motion encoder and a text encoder into one L2-normalised space.

The reward is TMR's score (cos(z_text, z_motion) + 1) / 2 in [0, 1], so SoPo's threshold tau = 0.45 means
cosine < -0.1 exactly as in the released code. Two fixes relative to the code SoPo ran (see
`../shared/design/motion_and_evaluation.md` section 6): the model takes UN-normalised HumanML3D features and
normalises them once with its own per-dimension train-split statistics, and padding frames are never encoded
(a key-padding mask, and padded values are zeroed so even NaN garbage past `lengths` cannot leak in).

Motion encoder (TEMOS/TMR "ACTOR-style"): Linear(D -> d), one learned summary token prepended, sinusoidal
positions, a transformer encoder; the token's output is the embedding. Text encoder: the frozen MiniLM
sentence embedding through a small MLP, or (`text_layers` > 0) that MLP's output as a summary token refined by a
transformer over MiniLM's token states, which keep the word order and side that mean pooling nearly erases.
Training lives in `sopo_ray/reward/training.py`.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sopo_ray.errors import CheckpointError
from sopo_ray.models.text_encoder import get_text_encoder, mean_pool, text_encoder_dim
from sopo_ray.models.token_encoder import get_token_encoder
from sopo_ray.motion.features import root_trajectory

KIND = "reward"
OFFICIAL_KIND = "tmr_official"  # sopo_ray/reward/tmr_official.py
KINDS = (KIND, OFFICIAL_KIND)


def as_motion_batch(features: Tensor | np.ndarray, lengths: Tensor | np.ndarray | list[int],
                    device: torch.device) -> tuple[Tensor, Tensor]:
    """Check and convert a motion batch: features `[B, T, D]` float32 and lengths `[B]` int64 on `device`,
    with T cut to the longest length (the padding past it is never needed)."""
    if isinstance(features, np.ndarray):  # datasets hold read-only arrays; torch wants writable memory
        features = np.require(features, np.float32, ["W"])
    x = torch.as_tensor(features, dtype=torch.float32, device=device)
    n = torch.as_tensor(lengths, dtype=torch.long, device=device).reshape(-1)
    if x.ndim != 3:
        raise ValueError(f"motion features must be [B, T, D], got shape {tuple(x.shape)}")
    if n.numel() != x.shape[0]:
        raise ValueError(f"got {x.shape[0]} motions but {n.numel()} lengths")
    if n.numel() and (int(n.min()) < 1 or int(n.max()) > x.shape[1]):
        raise ValueError(f"lengths must lie in [1, {x.shape[1]}], got {int(n.min())}..{int(n.max())}")
    t_max = int(n.max()) if n.numel() else 0
    return x[:, :t_max], n


def valid_mask(lengths: Tensor, t_max: int) -> Tensor:
    """`[B, t_max]` bool, True on frames before each length."""
    return torch.arange(t_max, device=lengths.device)[None, :] < lengths[:, None]


def sinusoidal_positions(length: int, dim: int, device: torch.device) -> Tensor:
    """The transformer's sine/cosine position table `[length, dim]`."""
    pos = torch.arange(length, device=device, dtype=torch.float32)[:, None]
    freq = torch.exp(torch.arange(0, dim, 2, device=device, dtype=torch.float32) * (-math.log(10000.0) / dim))
    table = torch.zeros(length, dim, device=device)
    table[:, 0::2] = torch.sin(pos * freq)
    table[:, 1::2] = torch.cos(pos * freq[: dim // 2])
    return table


TRAJECTORY_DIMS = 4
"""sin and cos of the heading, and the root's x and z (in 2 m units), all in the clip's start frame."""


def trajectory_channels(features: Tensor) -> Tensor:
    """`[B, T, 4]` global trajectory of un-normalised features: where the body is and which way it faces, relative
    to frame 0. The 263 features hold it only as per-frame velocities; turned angles, in-place vs travelling and
    kept facing are sums over time, which these channels state directly."""
    heading, root = root_trajectory(features)
    return torch.stack([heading.sin(), heading.cos(), root[..., 0] / 2.0, root[..., 2] / 2.0], dim=-1)


class MotionEncoder(nn.Module):
    """Normalised features `[B, T, D]` + valid mask -> `[B, d]` (the output at a learned summary token).

    Each token embeds `frames_per_token` consecutive frames (1 = TMR's one token per frame); a token is masked
    when all its frames are padding, and padding frames inside a token are already zero.
    """

    def __init__(self, feature_dim: int, latent_dim: int, num_layers: int, num_heads: int, ff_dim: int,
                 dropout: float, frames_per_token: int = 1) -> None:
        super().__init__()
        self.frames_per_token = frames_per_token
        self.embed = nn.Linear(feature_dim * frames_per_token, latent_dim)
        self.token = nn.Parameter(torch.randn(1, 1, latent_dim) * 0.02)
        self.dropout = nn.Dropout(dropout)
        layer = nn.TransformerEncoderLayer(latent_dim, num_heads, ff_dim, dropout, activation="gelu",
                                           batch_first=True)
        layer.self_attn.dropout = 0.0  # dropout on the [B, heads, T, T] weights costs 30% of a CPU step
        self.transformer = nn.TransformerEncoder(layer, num_layers, enable_nested_tensor=False)

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        b, t, d = x.shape
        p = self.frames_per_token
        extra = (-t) % p
        x = F.pad(x, (0, 0, 0, extra)).reshape(b, (t + extra) // p, p * d)
        valid = F.pad(mask, (0, extra)).reshape(b, -1, p).any(-1)
        h = torch.cat([self.token.expand(b, -1, -1), self.embed(x)], dim=1)
        h = self.dropout(h + sinusoidal_positions(h.shape[1], h.shape[-1], h.device))
        padding = torch.cat([torch.zeros(b, 1, dtype=torch.bool, device=x.device), ~valid], dim=1)
        return self.transformer(h, src_key_padding_mask=padding)[:, 0]


class TextHead(nn.Module):
    """Frozen sentence embedding `[B, E]` -> `[B, d]` (a two-layer MLP with a residual projection)."""

    def __init__(self, text_dim: int, latent_dim: int, dropout: float) -> None:
        super().__init__()
        self.proj = nn.Linear(text_dim, latent_dim)
        self.mlp = nn.Sequential(nn.LayerNorm(latent_dim), nn.Linear(latent_dim, 2 * latent_dim), nn.GELU(),
                                 nn.Dropout(dropout), nn.Linear(2 * latent_dim, latent_dim))

    def forward(self, emb: Tensor) -> Tensor:
        h = self.proj(emb)
        return h + self.mlp(h)


class TokenTextHead(nn.Module):
    """Frozen sentence embedding `[B, E]` and token states `[B, L, E]` -> `[B, d]`.

    `TextHead`'s output on the sentence embedding is a summary token in front of the projected token states (plus
    positions); pre-norm transformer layers add what attention reads from the tokens to it, so at initialisation
    this is close to `TextHead` and training adds the order and side information that pooling drops.
    """

    def __init__(self, text_dim: int, latent_dim: int, num_layers: int, num_heads: int, dropout: float) -> None:
        super().__init__()
        self.sentence = TextHead(text_dim, latent_dim, dropout)
        self.proj = nn.Linear(text_dim, latent_dim)
        layer = nn.TransformerEncoderLayer(latent_dim, num_heads, 2 * latent_dim, dropout, activation="gelu",
                                           batch_first=True, norm_first=True)
        self.transformer = nn.TransformerEncoder(layer, num_layers, enable_nested_tensor=False)

    def forward(self, sentence: Tensor, tokens: Tensor, lengths: Tensor) -> Tensor:
        h = torch.cat([self.sentence(sentence)[:, None], self.proj(tokens)], dim=1)
        h = h + sinusoidal_positions(h.shape[1], h.shape[-1], h.device)
        padding = torch.cat([torch.zeros_like(lengths[:, None], dtype=torch.bool),
                             ~valid_mask(lengths, tokens.shape[1])], dim=1)
        return self.transformer(h, src_key_padding_mask=padding)[:, 0]


class TextInputs(NamedTuple):
    """What the reward's text head reads for a batch of captions: the frozen sentence embeddings `[B, E]` and,
    for a token head, the token states `[B, L, E]` with their counts `[B]`."""

    sentences: Tensor
    tokens: Tensor | None = None
    lengths: Tensor | None = None

    def take(self, ids: Tensor) -> TextInputs:
        """Rows `ids` (the token states cut to the longest selected caption)."""
        if self.tokens is None or self.lengths is None:
            return TextInputs(self.sentences[ids])
        lengths = self.lengths[ids]
        return TextInputs(self.sentences[ids], self.tokens[ids, : int(lengths.max())], lengths)

    def to(self, device: torch.device) -> TextInputs:
        return TextInputs(*(None if t is None else t.to(device) for t in self))


class TMRReward(nn.Module):
    """Contrastive text/motion model; `score` is the SoPo reward, `motion_similarity` feeds beta_w.

    `mean`/`std` are this model's own per-dimension statistics of the train split (un-normalised features in,
    normalised once here). All encode/score methods accept torch tensors or numpy arrays; they do not change
    train/eval mode (a loaded model is in eval mode).
    """

    def __init__(self, mean: np.ndarray | Tensor, std: np.ndarray | Tensor, latent_dim: int = 128,
                 num_layers: int = 2, num_heads: int = 4, ff_dim: int | None = None, dropout: float = 0.1,
                 frames_per_token: int = 1, text_encoder: str = "minilm", trajectory: bool = False,
                 text_layers: int = 0) -> None:
        super().__init__()
        mean_t = torch.as_tensor(mean, dtype=torch.float32).reshape(-1)
        std_t = torch.as_tensor(std, dtype=torch.float32).reshape(-1)
        if mean_t.shape != std_t.shape or not torch.isfinite(std_t).all() or bool((std_t <= 0).any()):
            raise ValueError("reward normaliser needs finite, positive std of the same size as mean")
        self.register_buffer("mean", mean_t)
        self.register_buffer("std", std_t)
        self.text_encoder_name = text_encoder
        self.arch: dict[str, Any] = {
            "feature_dim": int(mean_t.numel()), "latent_dim": latent_dim, "num_layers": num_layers,
            "num_heads": num_heads, "ff_dim": ff_dim or 4 * latent_dim, "dropout": dropout,
            "frames_per_token": frames_per_token, "text_encoder": text_encoder, "trajectory": trajectory,
            "text_layers": text_layers,
        }
        self.trajectory = trajectory
        extra = TRAJECTORY_DIMS if trajectory else 0
        self.motion_encoder = MotionEncoder(int(mean_t.numel()) + extra, latent_dim, num_layers, num_heads,
                                            ff_dim or 4 * latent_dim, dropout, frames_per_token)
        text_dim = text_encoder_dim(text_encoder)
        self.text_head = (TokenTextHead(text_dim, latent_dim, text_layers, num_heads, dropout) if text_layers
                          else TextHead(text_dim, latent_dim, dropout))

    @property
    def feature_dim(self) -> int:
        return int(self.mean.numel())

    @property
    def device(self) -> torch.device:
        return self.mean.device

    def normalize(self, x: Tensor, mask: Tensor) -> Tensor:
        """(x - mean) / std on valid frames, exactly 0 on padding frames."""
        return torch.where(mask[..., None], (x - self.mean) / self.std, torch.zeros((), device=x.device))

    def encode_motion(self, features: Tensor | np.ndarray, lengths: Tensor | np.ndarray | list[int]) -> Tensor:
        """Un-normalised features `[B, T, D]` (anything past `lengths` ignored) -> unit vectors `[B, d]`."""
        x, n = as_motion_batch(features, lengths, self.device)
        if x.shape[-1] != self.feature_dim:
            raise ValueError(f"reward model expects {self.feature_dim}-dim features, got {x.shape[-1]}")
        mask = valid_mask(n, x.shape[1])
        h = self.normalize(x, mask)
        if self.trajectory:
            h = torch.cat([h, trajectory_channels(torch.where(mask[..., None], x, 0.0)) * mask[..., None]], dim=-1)
        return F.normalize(self.motion_encoder(h, mask), dim=-1)

    def text_inputs(self, captions: list[str]) -> TextInputs:
        """What the text head reads of `captions`, on CPU: the sentence embeddings, and for a token head the
        token states, whose mean pool is the sentence embedding (so the encoder runs once per caption)."""
        if not isinstance(self.text_head, TokenTextHead):
            return TextInputs(get_text_encoder(self.text_encoder_name).encode(list(captions)))
        tokens, lengths = get_token_encoder(self.text_encoder_name).encode(list(captions))
        return TextInputs(mean_pool(tokens, valid_mask(lengths, tokens.shape[1])), tokens, lengths)

    def encode_inputs(self, inputs: TextInputs) -> Tensor:
        """`text_inputs` -> unit vectors `[B, d]` in the shared space."""
        inputs = inputs.to(self.device)
        if isinstance(self.text_head, TokenTextHead):
            if inputs.tokens is None or inputs.lengths is None:
                raise ValueError("this reward reads token states: build its inputs with `text_inputs`")
            return F.normalize(self.text_head(inputs.sentences, inputs.tokens, inputs.lengths), dim=-1)
        return F.normalize(self.text_head(inputs.sentences), dim=-1)

    def encode_text(self, captions: list[str]) -> Tensor:
        """Captions -> unit vectors `[B, d]` in the shared space."""
        return self.encode_inputs(self.text_inputs(captions))

    @torch.no_grad()
    def score(self, features: Tensor | np.ndarray, lengths: Tensor | np.ndarray | list[int],
              captions: list[str], motion_index: Any = None) -> Tensor:
        """The reward r(x, c) = (cos(z_text, z_motion) + 1) / 2 in [0, 1], shape `[B]`. `motion_index` (which
        dataset motion each caption belongs to) is what the oracle control reads; a learned reward ignores it."""
        if len(captions) != len(features):
            raise ValueError(f"got {len(features)} motions but {len(captions)} captions")
        z_m = self.encode_motion(features, lengths)
        z_t = self.encode_text(captions)
        return ((z_m * z_t).sum(-1).clamp(-1.0, 1.0) + 1.0) / 2.0

    @torch.no_grad()
    def motion_similarity(self, features_a: Tensor | np.ndarray, lengths_a: Tensor | np.ndarray | list[int],
                          features_b: Tensor | np.ndarray, lengths_b: Tensor | np.ndarray | list[int]) -> Tensor:
        """Motion-to-motion score (cos(z_a, z_b) + 1) / 2 in [0, 1], row by row, shape `[B]`."""
        if len(features_a) != len(features_b):
            raise ValueError(f"motion_similarity pairs rows: got {len(features_a)} and {len(features_b)}")
        z_a = self.encode_motion(features_a, lengths_a)
        z_b = self.encode_motion(features_b, lengths_b)
        return ((z_a * z_b).sum(-1).clamp(-1.0, 1.0) + 1.0) / 2.0


def tmr_from_payload(payload: dict[str, Any]) -> TMRReward:
    """Rebuild a TMRReward (eval mode) from a loaded checkpoint payload of kind "reward" (`reward.reward_from_payload`
    also reads the imported released TMR)."""
    arch = dict(payload["arch"])
    feature_dim = arch.pop("feature_dim")
    model = TMRReward(torch.zeros(feature_dim), torch.ones(feature_dim), **arch)
    try:
        model.load_state_dict(payload["state"])
    except RuntimeError as exc:
        raise CheckpointError(f"reward checkpoint does not fit this model ({str(exc).splitlines()[0][:100]}); "
                              "retrain it with `sopo reward train`") from None
    return model.eval()
