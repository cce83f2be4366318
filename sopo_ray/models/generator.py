"""`MotionGenerator`: the one text-to-motion diffusion model the trainer, rollouts and evaluation use.

Two families behind one interface (contract C):
- ``mdm``: an MDM-style transformer denoiser that works directly on normalised HumanML3D features
  ([B, T, 263], padding masked);
- ``mld``: an MLD-style motion VAE whose latent ([B, tokens, latent_dim]) is denoised by the same transformer.

With `model.architecture: mdm_official` the MDM denoiser is the released MDM's, layer for layer
(`sopo_ray/models/mdm_official.py`); without `model.mask_frames` it always runs on data.max_frames frames, padding
included, as MDM trains and samples.

Everything outside this module sees un-normalised features; normalisation (dataset mean/std, stored as
buffers so they travel with the weights) and the VAE happen inside. The frozen text encoder is looked up by name
in a process-wide cache, so copies of a generator (reference model, Ray actors) do not copy its weights.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from pydantic import ValidationError
from torch import Tensor, nn

from sopo_ray.checkpoint import load_checkpoint, save_checkpoint
from sopo_ray.config import Config, config_to_dict, model_config
from sopo_ray.errors import CheckpointError, ConfigError
from sopo_ray.models.denoiser import MotionDenoiser
from sopo_ray.models.diffusion import GaussianDiffusion, seeded_normal
from sopo_ray.models.inference import CPU_BUCKET_SAMPLES, guided_forward, length_buckets
from sopo_ray.models.latent import LatentSpace
from sopo_ray.models.mdm_official import OfficialMDM
from sopo_ray.models.text_encoder import get_text_encoder, text_encoder_dim
from sopo_ray.models.token_encoder import get_token_encoder
from sopo_ray.models.vae import MotionVAE

KINDS = ("mdm", "mld")


def lengths_to_mask(lengths: Tensor, max_len: int) -> Tensor:
    """[B] lengths -> [B, max_len] bool mask, True on valid frames."""
    return torch.arange(max_len, device=lengths.device)[None, :] < lengths[:, None]


class MotionGenerator(nn.Module):
    """A text-conditioned diffusion model of motion (MDM- or MLD-style) with DDIM + classifier-free guidance.

    Attributes:
        kind: "mdm" (denoises features) or "mld" (denoises a VAE latent).
        num_timesteps: training diffusion steps T.
        max_frames: longest motion it can generate (positional table size).
        feature_dim: 263 for HumanML3D (251 for KIT-ML).
        bucket_samples: samples per length bucket of the fast sampler on CPU (`buckets`).
    """

    bucket_samples: int = CPU_BUCKET_SAMPLES

    def __init__(self, cfg: Config, mean: np.ndarray | Tensor, std: np.ndarray | Tensor) -> None:
        super().__init__()
        m, d = cfg.model, cfg.diffusion
        self.kind: str = m.kind
        self.text_encoder_name: str = m.text_encoder
        self.text_tokens: int = m.text_tokens
        self.max_frames: int = cfg.data.max_frames
        self.default_guidance: float = d.guidance_scale
        self.default_steps: int = d.sample_steps
        self.eta: float = d.ddim_eta
        self.fast_sampler: bool = d.fast_sampler
        mean_t = torch.as_tensor(np.asarray(mean), dtype=torch.float32)
        std_t = torch.as_tensor(np.asarray(std), dtype=torch.float32)
        self.feature_dim: int = int(mean_t.shape[0])
        self.register_buffer("mean", mean_t.clone())
        self.register_buffer("std", std_t.clamp_min(1e-8).clone())
        self.diffusion = GaussianDiffusion(d.num_timesteps, d.schedule, m.prediction)
        text_dim = text_encoder_dim(m.text_encoder)
        if self.kind == "mdm":
            self.latent: LatentSpace | None = None
            channels, seq_len = self.feature_dim, self.max_frames
        else:
            vae = MotionVAE(self.feature_dim, m.vae_latent_tokens, m.vae_latent_dim, m.latent_dim,
                            m.vae_num_layers, m.num_heads, m.ff_dim, m.dropout, self.max_frames,
                            m.frames_per_token)
            self.latent = LatentSpace(vae)
            channels, seq_len = m.vae_latent_dim, m.vae_latent_tokens
        self.model_channels: int = channels
        self.model_seq_len: int = seq_len
        self.full_length: bool = m.architecture == "mdm_official" and not m.mask_frames
        """The denoiser sees all max_frames frames, padding included (the released MDM's training)."""
        self.denoiser: nn.Module
        if m.architecture == "mdm_official":
            self.denoiser = OfficialMDM(channels, text_dim, m.latent_dim, m.num_layers, m.num_heads, m.ff_dim,
                                        m.dropout, max(seq_len, d.num_timesteps), m.mask_frames)
        else:
            self.denoiser = MotionDenoiser(channels, text_dim, m.latent_dim, m.num_layers, m.num_heads, m.ff_dim,
                                           m.dropout, seq_len, m.frames_per_token if self.kind == "mdm" else 1,
                                           m.text_tokens)

    # ------------------------------------------------------------------------------------------------
    # Contract C
    # ------------------------------------------------------------------------------------------------

    @property
    def num_timesteps(self) -> int:
        """Training diffusion steps T (timesteps are integers in [0, T))."""
        return self.diffusion.num_timesteps

    @property
    def device(self) -> torch.device:
        return self.mean.device

    def encode_text(self, captions: list[str]) -> Tensor:
        """The frozen text condition of `captions`, on this model's device (cached per caption): sentence
        embeddings [B, E]; with `model.text_tokens = n`, [B, 1 + n, E]: the sentence embedding, then the
        caption's first n token states, zero rows past its last token."""
        sentences = get_text_encoder(self.text_encoder_name).encode(captions)
        if not self.text_tokens:
            return sentences.to(self.device)
        words, _ = get_token_encoder(self.text_encoder_name).encode(captions)
        out = torch.zeros(len(captions), 1 + self.text_tokens, sentences.shape[-1])
        out[:, 0] = sentences
        n = min(words.shape[1], self.text_tokens)
        out[:, 1: 1 + n] = words[:, :n]
        return out.to(self.device)

    def trainable_parameters(self) -> list[nn.Parameter]:
        """The parameters alignment trains: the denoiser's (an MLD's VAE stays frozen)."""
        return list(self.denoiser.parameters())

    def normalize(self, features: Tensor) -> Tensor:
        """Un-normalised features -> model-normalised features (dataset mean/std)."""
        return (features - self.mean) / self.std

    def denormalize(self, features: Tensor) -> Tensor:
        """Model-normalised features -> un-normalised HumanML3D features."""
        return features * self.std + self.mean

    @torch.no_grad()
    def to_model_space(self, features: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        """Un-normalised [B, T, D] features -> (x0 [B, T', C] in the space the diffusion runs in, mask [B, T']).

        MDM: normalised features with padding zeroed, mask = valid frames (padded to max_frames when
        `full_length`). MLD: the VAE posterior mean (scaled to unit variance), mask all True. No gradient flows
        through this map.
        """
        features = features.to(self.device, torch.float32)
        lengths = torch.as_tensor(lengths, device=self.device).long()
        if self.full_length:
            features = nn.functional.pad(features, (0, 0, 0, self.max_frames - features.shape[1]))
        mask = lengths_to_mask(lengths, features.shape[1])
        x = self.normalize(features) * mask[..., None]
        if self.latent is None:
            return x, mask
        z = self.latent.encode(x, lengths)
        return z, torch.ones(z.shape[:2], dtype=torch.bool, device=self.device)

    def denoise_error(self, x0: Tensor, mask: Tensor, t: Tensor, noise: Tensor, text_emb: Tensor,
                      keep_cond: Tensor | None = None) -> Tensor:
        """Per-sample masked mean squared error ||target - f(x_t, t, c)||^2, shape [B].

        x_t = q_sample(x0, t, noise); the target is x0 or noise per `model.prediction`. `keep_cond` [B] bool
        (default all True) replaces the text condition by the learned null condition where False (CFG training).
        """
        x_t = self.diffusion.q_sample(x0, t, noise)
        out = self.denoiser(x_t, t, text_emb, mask, keep_cond)
        target = self.diffusion.target(x0, noise)
        weight = mask[..., None].to(out.dtype)
        sq = ((target - out) ** 2 * weight).sum(dim=(1, 2))
        return sq / (weight.sum(dim=(1, 2)) * out.shape[-1]).clamp_min(1.0)

    @torch.no_grad()
    def sample(self, text_emb: Tensor, lengths: Tensor | list[int], seeds: list[int], steps: int | None = None,
               guidance: float | None = None, eta: float | None = None, ancestral: bool = False,
               fast: bool | None = None) -> Tensor:
        """Generate un-normalised features [B, max(lengths), D], zero past each length.

        Sample b's initial noise and any stochastic-step noise come only from a torch.Generator seeded with
        seeds[b], so a sample does not depend on the rest of the batch. `steps` DDIM steps (default from
        config), `guidance` the classifier-free guidance scale (1 = conditional only, 0 = unconditional),
        `eta` the DDIM eta (default from config). `ancestral=True` runs the full T-step DDPM sampler instead.
        `fast` (default `diffusion.fast_sampler`) samples under inference mode, in length buckets on CPU, through
        `models.inference` and a fused DDIM step: the same motions to float rounding (tests/test_fast_sampler.py).
        """
        lengths = torch.as_tensor(lengths, device=self.device).long()
        if len(seeds) != lengths.shape[0] or text_emb.shape[0] != lengths.shape[0]:
            raise ValueError(f"sample: {text_emb.shape[0]} text embeddings, {lengths.shape[0]} lengths and "
                             f"{len(seeds)} seeds must match")
        t_max = int(lengths.max())
        if t_max > self.max_frames or int(lengths.min()) < 1:
            raise ConfigError(f"requested motion length {t_max} is outside 1..{self.max_frames} frames this model "
                              "was trained for; pass a shorter --length")
        steps = self.default_steps if steps is None else steps
        guidance = self.default_guidance if guidance is None else guidance
        eta = self.eta if eta is None else eta
        text_emb = text_emb.to(self.device, torch.float32)
        if not (self.fast_sampler if fast is None else fast):
            return self._sample(text_emb, lengths, seeds, steps, guidance, eta, ancestral, False)
        out = torch.zeros(lengths.shape[0], t_max, self.feature_dim, device=self.device)
        with torch.inference_mode():  # `out` was made outside: callers get an ordinary tensor
            for idx in self.buckets(lengths):
                part = self._sample(text_emb[idx], lengths[idx], [seeds[i] for i in idx.tolist()], steps, guidance,
                                    eta, ancestral, True)
                out[idx.to(self.device), : part.shape[1]] = part
        return out

    def generate(self, captions: list[str], lengths: Tensor | list[int], seeds: list[int],
                 steps: int | None = None, guidance: float | None = None, eta: float | None = None,
                 fast: bool | None = None) -> Tensor:
        """`sample` from captions: encode the text, then sample (un-normalised features [B, T, D])."""
        return self.sample(self.encode_text(captions), lengths, seeds, steps, guidance, eta, fast=fast)

    # ------------------------------------------------------------------------------------------------
    # Internals
    # ------------------------------------------------------------------------------------------------

    def _sample(self, text_emb: Tensor, lengths: Tensor, seeds: list[int], steps: int, guidance: float, eta: float,
                ancestral: bool, fast: bool) -> Tensor:
        """`sample` of one batch padded to its longest motion (arguments checked and defaulted by `sample`)."""
        t_max = int(lengths.max())
        if self.latent is None:
            mask = lengths_to_mask(lengths, self.max_frames if self.full_length else t_max)
        else:
            mask = torch.ones(lengths.shape[0], self.model_seq_len, dtype=torch.bool, device=self.device)
        seq = mask.shape[1]
        generators = [torch.Generator().manual_seed(int(s)) for s in seeds]

        def noise() -> Tensor:
            full = seeded_normal(generators, (self.model_seq_len, self.model_channels))
            return full[:, :seq].to(self.device)

        def model_fn(x_t: Tensor, t: Tensor) -> Tensor:
            return self._guided(x_t, t, text_emb, mask, guidance, fast)

        if ancestral:
            x0 = self.diffusion.ancestral_sample(model_fn, noise)
        else:
            x0 = self.diffusion.ddim_sample(model_fn, noise, steps, eta, fused=fast)
        return self._decode(x0, lengths, t_max)

    def buckets(self, lengths: Tensor) -> list[Tensor]:
        """Sample indices of each batch the fast sampler runs: groups of `bucket_samples` similar lengths on CPU
        where padding is masked (MDM with frame masks); one batch otherwise (MLD latents and full-length MDM have
        no padding; a GPU wants large batches, not measured here)."""
        if self.latent is None and not self.full_length and self.device.type == "cpu":
            return length_buckets(lengths, self.bucket_samples)
        return [torch.arange(lengths.shape[0])]

    def _guided(self, x_t: Tensor, t: Tensor, text_emb: Tensor, mask: Tensor, guidance: float,
                fast: bool = False) -> Tensor:
        """Denoiser output with classifier-free guidance: uncond + w * (cond - uncond), one batched pass (`fast`:
        `inference.guided_forward`, which computes what the two halves share once)."""
        batch = x_t.shape[0]
        if guidance == 1.0:
            return self.denoiser(x_t, t, text_emb, mask, None, fast=fast)
        if guidance == 0.0:
            drop = torch.zeros(batch, dtype=torch.bool, device=x_t.device)
            return self.denoiser(x_t, t, text_emb, mask, drop, fast=fast)
        if fast:
            return guided_forward(self.denoiser, x_t, t, text_emb, mask, guidance)
        keep = torch.cat([torch.ones(batch, dtype=torch.bool), torch.zeros(batch, dtype=torch.bool)])
        out = self.denoiser(torch.cat([x_t, x_t]), torch.cat([t, t]), torch.cat([text_emb, text_emb]),
                            torch.cat([mask, mask]), keep.to(x_t.device))
        cond, uncond = out[:batch], out[batch:]
        return uncond + guidance * (cond - uncond)

    def _decode(self, x0: Tensor, lengths: Tensor, t_max: int) -> Tensor:
        """Model-space sample -> un-normalised features [B, t_max, D], zero past each length."""
        x0 = x0[:, :t_max] if self.latent is None else self.latent.decode(x0, lengths, t_max)
        mask = lengths_to_mask(lengths, t_max)
        return self.denormalize(x0) * mask[..., None]


# ----------------------------------------------------------------------------------------------------
# Build / save / load
# ----------------------------------------------------------------------------------------------------


def build_generator(cfg: Config, dataset_stats: Any) -> MotionGenerator:
    """A freshly initialised generator for `cfg`; `dataset_stats` has `.mean`/`.std` (e.g. a MotionDataset)
    or is a `(mean, std)` pair of [D] arrays (the train split's statistics). Seeds torch with `cfg.seed` first,
    so the initial weights are reproducible."""
    if isinstance(dataset_stats, tuple | list):
        mean, std = dataset_stats
    else:
        mean, std = dataset_stats.mean, dataset_stats.std
    torch.manual_seed(cfg.seed)
    return MotionGenerator(cfg, mean, std)


def save_generator(path: str | Path, gen: MotionGenerator, cfg: Config, data_id: str | None,
                   **extra: Any) -> Path:
    """Atomically write `gen` (weights, normalisation stats, config) as a checkpoint of kind gen.kind."""
    state = {k: v.detach().cpu() for k, v in gen.state_dict().items()}
    return save_checkpoint(path, gen.kind, state, config_to_dict(cfg), data_id, **extra)


def generator_from_payload(payload: dict[str, Any], path: str | Path = "<memory>") -> MotionGenerator:
    """Rebuild a generator from a loaded checkpoint dict; CheckpointError if the config and weights disagree.

    An MLD's VAE comes back frozen (requires_grad False): after pretraining only the denoiser trains.
    """
    try:
        cfg = model_config(payload["config"])
    except ValidationError as err:
        raise CheckpointError(f"checkpoint {path} has a config this version cannot read "
                              f"({err.errors()[0]['msg']}); retrain it with this version of sopo_ray") from None
    if cfg.model.kind != payload["kind"]:
        raise CheckpointError(f"checkpoint {path} is labelled '{payload['kind']}' but its config says "
                              f"'{cfg.model.kind}'; the file is inconsistent, retrain it")
    state = payload["state"]
    gen = MotionGenerator(cfg, state["mean"], state["std"])
    load_state_checked(gen, state, path)
    if gen.latent is not None:
        gen.latent.freeze()
    return gen


def load_state_checked(gen: MotionGenerator, state: dict[str, Tensor], path: str | Path) -> None:
    """`gen.load_state_dict(state)`, turning missing/unexpected keys and shape mismatches into CheckpointError."""
    own = gen.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    wrong = sorted(k for k in set(own) & set(state) if own[k].shape != state[k].shape)
    if missing or unexpected or wrong:
        first = (wrong or missing or unexpected)[0]
        detail = (f"shape of '{first}' is {tuple(state[first].shape)} there but {tuple(own[first].shape)} here"
                  if wrong else f"{len(missing)} missing and {len(unexpected)} unexpected weights (e.g. '{first}')")
        raise CheckpointError(f"checkpoint {path} does not fit a {gen.kind} model of this config ({detail}); "
                              "use the config it was trained with or retrain")
    gen.load_state_dict(state)


def load_generator(path: str | Path, data_id: str | None = None,
                   kind: str | None = None) -> tuple[MotionGenerator, dict[str, Any]]:
    """Load a generator checkpoint (weights_only) -> (generator in eval mode, its config dict).

    `kind` ("mdm"/"mld") and `data_id` are checked when given; a mismatch raises CheckpointError.
    """
    payload = load_checkpoint(path, kind if kind is not None else KINDS, data_id)
    gen = generator_from_payload(payload, path)
    gen.eval()
    return gen, payload["config"]
