"""Sampling-time evaluation of the denoiser: the same weights and math as eval-mode `forward`, run faster.

Three pieces, all used only when `MotionGenerator.sample` runs with `diffusion.fast_sampler` (the default):

- `encoder_forward(encoder, h, valid)` is `encoder(h, src_key_padding_mask=~valid)` of an eval-mode
  `nn.TransformerEncoder`, written out layer by layer with one fused q/k/v projection and
  `scaled_dot_product_attention` on its views (a boolean mask, no copies of q, k, v). PyTorch's own inference
  fast path for a padding mask runs a masked softmax that alone cost about as much as the layer's matmuls at the
  CPU default's sizes (profiled).
- `guided_forward` computes classifier-free guidance in one pass that projects x_t into the transformer once
  (not once per half) and applies guidance before the linear output projection, which then runs on half the rows.
- `length_buckets(lengths, size)` splits a batch into groups of similar motion length, so each group is padded
  only to its own longest motion. Every sample's noise comes from its own seed and padded frames are masked out
  of attention, so sampling the groups one after another gives the same motions as one padded batch (to float
  rounding) for less work: attention grows with the square of the padded length.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn import functional as F

CPU_BUCKET_SAMPLES = 16
"""Samples per length bucket on CPU: fewer pads less, more keeps each forward's matmuls large. At the CPU default
(one thread) 8, 16 and 32 were within noise of each other and one batch of 64 clearly slower
(`bench/sampler.py --buckets 8,32,64`, docs/scaling.md section 2.5)."""


def supports_fast(encoder: nn.TransformerEncoder) -> bool:
    """Whether `encoder_forward` reproduces `encoder`: eval mode, batch-first layers with one fused q/k/v
    projection (what `MotionDenoiser` and `OfficialMDM` build)."""
    return not encoder.training and all(
        isinstance(layer, nn.TransformerEncoderLayer) and layer.self_attn.batch_first
        and layer.self_attn._qkv_same_embed_dim and layer.self_attn.in_proj_bias is not None
        for layer in encoder.layers)


def _attention(attn: nn.MultiheadAttention, x: Tensor, attend: Tensor | None) -> Tensor:
    """Self-attention of `x` [B, L, d]; `attend` [B, 1, 1, L] True on the keys a query may see (None: all)."""
    batch, length, width = x.shape
    heads = attn.num_heads
    qkv = F.linear(x, attn.in_proj_weight, attn.in_proj_bias).view(batch, length, 3, heads, width // heads)
    q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)                                # each [B, H, L, d/H]
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=attend)
    return F.linear(out.transpose(1, 2).reshape(batch, length, width), attn.out_proj.weight, attn.out_proj.bias)


def _layer(layer: nn.TransformerEncoderLayer, x: Tensor, attend: Tensor | None) -> Tensor:
    """One eval-mode `nn.TransformerEncoderLayer` (pre- or post-norm; dropout is the identity)."""
    def feed_forward(y: Tensor) -> Tensor:
        return layer.linear2(layer.activation(layer.linear1(y)))

    if layer.norm_first:
        x = x + _attention(layer.self_attn, layer.norm1(x), attend)
        return x + feed_forward(layer.norm2(x))
    x = layer.norm1(x + _attention(layer.self_attn, x, attend))
    return layer.norm2(x + feed_forward(x))


def encoder_forward(encoder: nn.TransformerEncoder, h: Tensor, valid: Tensor | None) -> Tensor:
    """`encoder(h, src_key_padding_mask=~valid)` for an encoder that `supports_fast`; `valid` [B, L] bool is True on
    the tokens attention may use (None: all)."""
    attend = None if valid is None or bool(valid.all()) else valid[:, None, None, :]
    for layer in encoder.layers:
        h = _layer(layer, h, attend)
    return h if encoder.norm is None else encoder.norm(h)


def guided_forward(denoiser: nn.Module, x_t: Tensor, t: Tensor, text_emb: Tensor, mask: Tensor,
                   scale: float) -> Tensor:
    """Classifier-free guidance uncond + scale * (cond - uncond) of an eval-mode denoiser (`MotionDenoiser` or
    `OfficialMDM`) in one pass over [cond; uncond] rows, computing what the halves share once: the input
    projection of x_t before the transformer, and the output projection after it (it is linear, so guidance is
    applied to the transformer's output and the projection runs on half the rows)."""
    n = x_t.shape[0]
    tokens, valid = denoiser.embed(x_t, mask)
    keep = torch.arange(2 * n, device=x_t.device) < n
    cond = denoiser.condition(t.repeat(2), text_emb.repeat(2, *[1] * (text_emb.dim() - 1)), keep)
    h = denoiser.encode(cond, tokens.repeat(2, 1, 1), valid.repeat(2, 1), fast=True)
    return denoiser.project(torch.lerp(h[n:], h[:n], scale), x_t.shape[1])


def length_buckets(lengths: Tensor, size: int) -> list[Tensor]:
    """Indices of `lengths` [B] sorted by length and cut into ceil(B / size) groups of near-equal count."""
    order = torch.argsort(lengths.cpu(), stable=True)
    return list(torch.tensor_split(order, -(-order.numel() // size)))
