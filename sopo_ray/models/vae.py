"""MLD-style motion VAE: variable-length normalised features <-> a few latent tokens.

Encoder: learned distribution tokens (mu and log-variance per latent token) are prepended to the projected frames;
a transformer encoder (padding masked) reads the motion into them. Decoder: the latent tokens and a length token
are prepended to per-frame sinusoidal queries; a transformer (padding masked, so the output has exactly the
requested length) writes one feature vector per query frame. With `frames_per_token = p > 1`, both sides work on
tokens of p consecutive frames (as the MDM denoiser can), dividing the sequence length by p.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from sopo_ray.models.denoiser import sinusoidal_table, timestep_embedding


def _encoder(width: int, layers: int, heads: int, ff_dim: int, dropout: float) -> nn.TransformerEncoder:
    layer = nn.TransformerEncoderLayer(width, heads, ff_dim, dropout, activation="gelu", batch_first=True,
                                       norm_first=True)
    return nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)


class MotionVAE(nn.Module):
    """[B, T, D] normalised features (+ lengths) <-> [B, tokens, latent_dim] latents."""

    def __init__(self, feature_dim: int, latent_tokens: int, latent_dim: int, width: int, num_layers: int,
                 num_heads: int, ff_dim: int, dropout: float, max_frames: int, frames_per_token: int = 1) -> None:
        super().__init__()
        self.latent_tokens = latent_tokens
        self.latent_dim = latent_dim
        self.width = width
        self.max_frames = max_frames
        self.patch = frames_per_token
        max_tokens = -(-max_frames // frames_per_token)
        self.register_buffer("positions", sinusoidal_table(max_tokens + 2 * latent_tokens + 1, width),
                             persistent=False)
        self.input_proj = nn.Linear(feature_dim * frames_per_token, width)
        self.dist_tokens = nn.Parameter(torch.randn(2 * latent_tokens, width) * 0.02)
        self.encoder = _encoder(width, num_layers, num_heads, ff_dim, dropout)
        self.encoder_norm = nn.LayerNorm(width)
        self.to_mu = nn.Linear(width, latent_dim)
        self.to_logvar = nn.Linear(width, latent_dim)
        self.from_latent = nn.Linear(latent_dim, width)
        self.length_mlp = nn.Sequential(nn.Linear(width, width), nn.SiLU(), nn.Linear(width, width))
        self.decoder = _encoder(width, num_layers, num_heads, ff_dim, dropout)
        self.decoder_norm = nn.LayerNorm(width)
        self.output_proj = nn.Linear(width, feature_dim * frames_per_token)

    def _token_mask(self, lengths: Tensor, frames: int) -> Tensor:
        """[B, ceil(frames / p)] True where a token holds at least one valid frame."""
        tokens = -(-frames // self.patch)
        return torch.arange(tokens, device=lengths.device)[None] * self.patch < lengths[:, None]

    def encode(self, x: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        """Normalised features [B, T, D] -> posterior (mu, logvar), each [B, tokens, latent_dim]."""
        batch, frames, dim = x.shape
        n = 2 * self.latent_tokens
        valid = torch.arange(frames, device=x.device)[None] < lengths[:, None]
        x = nn.functional.pad(x * valid[..., None], (0, 0, 0, -frames % self.patch))
        tokens = self.input_proj(x.reshape(batch, -1, self.patch * dim))
        h = torch.cat([self.dist_tokens.expand(batch, -1, -1), tokens], dim=1)
        h = h + self.positions[: h.shape[1]]
        pad = torch.cat([torch.zeros(batch, n, dtype=torch.bool, device=x.device),
                         ~self._token_mask(lengths, frames)], dim=1)
        h = self.encoder_norm(self.encoder(h, src_key_padding_mask=pad))
        return self.to_mu(h[:, : self.latent_tokens]), self.to_logvar(h[:, self.latent_tokens: n]).clamp(-20, 10)

    def decode(self, z: Tensor, lengths: Tensor, frames: int) -> Tensor:
        """Latents [B, tokens, latent_dim] -> normalised features [B, frames, D] (padding frames unspecified)."""
        batch = z.shape[0]
        n = self.latent_tokens + 1
        valid = self._token_mask(lengths, frames)
        length_token = self.length_mlp(timestep_embedding(lengths, self.width))[:, None]
        queries = self.positions[n: n + valid.shape[1]].expand(batch, -1, -1)
        h = torch.cat([self.from_latent(z), length_token, queries], dim=1)
        h = h + torch.cat([self.positions[:n].expand(batch, -1, -1), torch.zeros_like(queries)], dim=1)
        pad = torch.cat([torch.zeros(batch, n, dtype=torch.bool, device=z.device), ~valid], dim=1)
        h = self.decoder_norm(self.decoder(h, src_key_padding_mask=pad))
        out = self.output_proj(h[:, n:])
        return out.reshape(batch, -1, out.shape[-1] // self.patch)[:, :frames]

    def loss(self, x: Tensor, lengths: Tensor, kl_weight: float,
             generator: torch.Generator | None = None) -> tuple[Tensor, dict[str, float]]:
        """Masked reconstruction MSE + kl_weight * KL(q(z|x) || N(0, I)); returns (loss, metrics)."""
        mu, logvar = self.encode(x, lengths)
        eps = torch.randn(mu.shape, generator=generator).to(mu.device)
        z = mu + (0.5 * logvar).exp() * eps
        recon = self.decode(z, lengths, x.shape[1])
        valid = (torch.arange(x.shape[1], device=x.device)[None] < lengths[:, None]).to(x.dtype)[..., None]
        rec = ((recon - x) ** 2 * valid).sum() / (valid.sum() * x.shape[-1])
        kl = 0.5 * (mu**2 + logvar.exp() - 1.0 - logvar).sum(dim=(1, 2)).mean()
        loss = rec + kl_weight * kl
        return loss, {"loss/vae": loss.item(), "loss/vae_recon": rec.item(), "loss/vae_kl": kl.item()}
