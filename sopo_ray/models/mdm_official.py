"""The released MDM's denoiser (Tevet et al., ICLR 2023), parameter for parameter (its checkpoints are imported by
`models.mdm_import`).

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

import math

import torch
from torch import Tensor, nn

from sopo_ray.models.inference import encoder_forward, supports_fast


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

