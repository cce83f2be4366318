"""MDM-style denoiser: a transformer encoder over a sequence (motion frames or VAE latent tokens).

One condition token (timestep embedding + projected text embedding, or a learned null embedding when the text is
dropped for classifier-free guidance) is prepended to the projected input sequence, sinusoidal positions are
added, padded frames are zeroed and excluded with a key padding mask, and each output token is projected back to
the input width. The output is read as x0 or epsilon by `GaussianDiffusion` (per `model.prediction`).

With `frames_per_token = p > 1`, p consecutive frames are concatenated into one token (and split again at the
output), which divides the sequence length, and so the CPU cost, by about p.

With `text_tokens = n > 0` the text condition is `[B, 1 + n, E]`: the pooled sentence embedding first (read as
above), then the caption's per-token encoder states, zero rows past its last token. Each word becomes one more
token between the condition token and the frames (projected, plus a learned position per word), so attention can
read which action comes first and which side a clause names. When the text is dropped the words are masked out
too, so the unconditional branch sees the null condition alone.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import Tensor, nn

from sopo_ray.models.inference import encoder_forward, supports_fast


def sinusoidal_table(length: int, dim: int) -> Tensor:
    """Sinusoidal position table [length, dim] (sin on even, cos on odd channels)."""
    pos = torch.arange(length, dtype=torch.float32)[:, None]
    freq = torch.exp(torch.arange(0, dim, 2, dtype=torch.float32) * (-math.log(10000.0) / dim))
    table = torch.zeros(length, dim)
    table[:, 0::2] = torch.sin(pos * freq)
    table[:, 1::2] = torch.cos(pos * freq[: dim // 2])
    return table


def timestep_embedding(t: Tensor, dim: int) -> Tensor:
    """Sinusoidal embedding [B, dim] of integer (or real) timesteps t [B]."""
    half = dim // 2
    freq = torch.exp(-math.log(10000.0) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    args = t.float()[:, None] * freq[None]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    return nn.functional.pad(emb, (0, dim % 2))


class Condition(NamedTuple):
    """What the frame tokens attend to besides each other: the condition token (timestep + sentence, at position
    0), then any word tokens; `valid` [B, 1 + n] masks padding words and the words of a dropped text."""

    tokens: Tensor
    valid: Tensor


class MotionDenoiser(nn.Module):
    """f(x_t, t, c): [B, L, C] noisy sequence -> [B, L, C] prediction (x0 or eps)."""

    def __init__(self, in_dim: int, text_dim: int, latent_dim: int, num_layers: int, num_heads: int,
                 ff_dim: int, dropout: float, max_len: int, frames_per_token: int = 1, text_tokens: int = 0) -> None:
        super().__init__()
        self.latent_dim = latent_dim
        self.max_len = max_len
        self.patch = frames_per_token
        self.text_tokens = text_tokens
        tokens = -(-max_len // frames_per_token)
        self.input_proj = nn.Linear(in_dim * frames_per_token, latent_dim)
        self.time_mlp = nn.Sequential(nn.Linear(latent_dim, latent_dim), nn.SiLU(),
                                      nn.Linear(latent_dim, latent_dim))
        self.text_proj = nn.Linear(text_dim, latent_dim)
        self.null_cond = nn.Parameter(torch.zeros(latent_dim))
        self.word_proj = nn.Linear(text_dim, latent_dim) if text_tokens else None
        self.word_positions = nn.Parameter(0.02 * torch.randn(text_tokens, latent_dim)) if text_tokens else None
        self.register_buffer("positions", sinusoidal_table(tokens + 1, latent_dim), persistent=False)
        layer = nn.TransformerEncoderLayer(latent_dim, num_heads, ff_dim, dropout, activation="gelu",
                                           batch_first=True, norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, num_layers, enable_nested_tensor=False)
        self.out_norm = nn.LayerNorm(latent_dim)
        self.output_proj = nn.Linear(latent_dim, in_dim * frames_per_token)

    def condition(self, t: Tensor, text_emb: Tensor, keep_cond: Tensor | None) -> Condition:
        """The condition token (timestep embedding + text projection, or the null embedding where keep_cond is
        False) and, for a `[B, 1 + n, E]` text, the caption's word tokens, trimmed to the batch's longest caption."""
        if text_emb.dim() != (3 if self.text_tokens else 2):
            raise ValueError(f"text condition of shape {tuple(text_emb.shape)}: this denoiser reads "
                             f"{'[B, 1 + words, E]' if self.text_tokens else '[B, E]'} (model.text_tokens="
                             f"{self.text_tokens}); build it with MotionGenerator.encode_text")
        sentence = text_emb[:, 0] if self.text_tokens else text_emb
        text = self.text_proj(sentence)
        if keep_cond is None:  # still route through `where` so null_cond is in the graph (DDP-safe)
            keep_cond = torch.ones(text.shape[0], dtype=torch.bool, device=text.device)
        text = torch.where(keep_cond[:, None], text, self.null_cond.expand_as(text))
        first = self.time_mlp(timestep_embedding(t, self.latent_dim)) + text + self.positions[0]
        always = torch.ones_like(keep_cond[:, None])
        if self.word_proj is None or self.word_positions is None:
            return Condition(first[:, None], always)
        words = text_emb[:, 1: 1 + self.text_tokens]
        present = (words.abs().amax(-1) > 0) & keep_cond[:, None]   # zero rows are padding
        n = int(present.sum(1).max()) if present.numel() else 0
        words = self.word_proj(words[:, :n]) + self.word_positions[:n]
        return Condition(torch.cat([first[:, None], words], dim=1), torch.cat([always, present[:, :n]], dim=1))

    def embed(self, x_t: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        """Frame tokens [B, L', d] (padded frames zeroed, `frames_per_token` frames per token, projected) and
        their validity [B, L'] (a token is valid when one of its frames is)."""
        batch, length, channels = x_t.shape
        if length > self.max_len:
            raise ValueError(f"sequence of {length} frames exceeds the denoiser's {self.max_len}")
        extra = -length % self.patch
        x = nn.functional.pad(x_t * mask[..., None], (0, 0, 0, extra))
        tokens = x.reshape(batch, (length + extra) // self.patch, self.patch * channels)
        token_mask = nn.functional.pad(mask, (0, extra)).reshape(batch, -1, self.patch).any(-1)
        return self.input_proj(tokens), token_mask

    def encode(self, cond: Condition, tokens: Tensor, valid: Tensor, fast: bool = False) -> Tensor:
        """The transformer over [condition tokens, frame tokens + positions] -> normalised frame features
        [B, L', d], the input of the linear `project`. `fast` (eval mode) runs `inference.encoder_forward`."""
        h = torch.cat([cond.tokens, tokens + self.positions[1: tokens.shape[1] + 1]], dim=1)
        valid = torch.cat([cond.valid, valid], dim=1)
        if fast and supports_fast(self.encoder):
            h = encoder_forward(self.encoder, h, valid)
        else:
            h = self.encoder(h, src_key_padding_mask=~valid)
        return self.out_norm(h[:, cond.tokens.shape[1]:])

    def project(self, h: Tensor, length: int) -> Tensor:
        """Frame features [B, L', d] -> predictions [B, length, C]; linear, so guidance may come before it."""
        out = self.output_proj(h)
        return out.reshape(h.shape[0], -1, out.shape[-1] // self.patch)[:, :length]

    def forward(self, x_t: Tensor, t: Tensor, text_emb: Tensor, mask: Tensor,
                keep_cond: Tensor | None = None, fast: bool = False) -> Tensor:
        """x_t [B, L, C], t [B] int, text_emb [B, E] (or [B, 1 + n, E] with words), mask [B, L] bool valid,
        keep_cond [B] bool -> [B, L, C]."""
        tokens, valid = self.embed(x_t, mask)
        return self.project(self.encode(self.condition(t, text_emb, keep_cond), tokens, valid, fast), x_t.shape[1])
