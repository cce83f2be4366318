"""The MLD latent space: a trained motion VAE plus the scale that gives its latents unit variance.

Diffusion runs on `encode(x) = mu(x) / scale` (the posterior mean, deterministic, so the preference terms of a
motion are reproducible) and samples are decoded with `decode(z * scale)`. The VAE is trained first and then kept
frozen by pretraining; `fit_scale` sets the scale from training-set latents (as latent diffusion does).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from sopo_ray.models.vae import MotionVAE


class LatentSpace(nn.Module):
    """Maps normalised features to diffusion latents and back; holds the VAE and the latent scale."""

    def __init__(self, vae: MotionVAE) -> None:
        super().__init__()
        self.vae = vae
        self.frozen = False
        self.register_buffer("scale", torch.ones(()))

    def freeze(self) -> LatentSpace:
        """Fix the VAE for good: no gradients, and eval mode (no dropout) even under a parent's `train()`."""
        self.frozen = True
        self.requires_grad_(False)
        return self.eval()

    def train(self, mode: bool = True) -> LatentSpace:
        return super().train(mode and not self.frozen)

    def encode(self, x: Tensor, lengths: Tensor) -> Tensor:
        """Normalised features [B, T, D] -> scaled posterior means [B, tokens, latent_dim]."""
        mu, _ = self.vae.encode(x, lengths)
        return mu / self.scale

    def decode(self, z: Tensor, lengths: Tensor, frames: int) -> Tensor:
        """Scaled latents [B, tokens, latent_dim] -> normalised features [B, frames, D]."""
        return self.vae.decode(z * self.scale, lengths, frames)

    @torch.no_grad()
    def fit_scale(self, x: Tensor, lengths: Tensor, batch_size: int = 256) -> float:
        """Set the scale to the std of the posterior means of `x` (e.g. the training set); returns it."""
        was_training = self.vae.training
        self.vae.eval()
        mus = [self.vae.encode(x[i:i + batch_size], lengths[i:i + batch_size])[0]
               for i in range(0, x.shape[0], batch_size)]
        self.vae.train(was_training)
        self.scale.fill_(float(torch.cat(mus).std().clamp_min(1e-6)))
        return float(self.scale)
