"""Frozen per-token text features: distilbert-base-uncased's last hidden states, as the released TMR reads text.

TMR (Petrovich et al., ICCV 2023) feeds its text encoder the whole sequence of DistilBERT hidden states of a
caption ([CLS] ... [SEP], 768-d each, no truncation), not a pooled sentence vector, so this is a sibling of the
sentence encoders in `text_encoder.py`: `encode(captions)` returns padded features `[B, L, 768]` and the token
counts `[B]`. Each distinct caption is run once per process (rollouts score the same captions again and again).
Weights: $SOPO_DISTILBERT_DIR or the Hugging Face cache (`hf_model_dir`); nothing is downloaded.
"""

from __future__ import annotations

import os
import threading

import torch
from torch import Tensor

from sopo_ray.models.text_encoder import hf_model_dir

REPOS = ("distilbert-base-uncased", "distilbert/distilbert-base-uncased")


class DistilBertTokens:
    """distilbert-base-uncased hidden states per token, cached per caption."""

    dim = 768

    def __init__(self, batch_size: int = 64) -> None:
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
        self.batch_size = batch_size
        self._cache: dict[str, Tensor] = {}
        self._lock = threading.Lock()

    @torch.no_grad()
    def _embed(self, texts: list[str]) -> list[Tensor]:
        tokens = self.tokenizer(texts, return_tensors="pt", padding=True)
        hidden = self.model(**tokens).last_hidden_state.float()
        counts = tokens["attention_mask"].sum(1).tolist()
        return [h[:n].clone() for h, n in zip(hidden, counts, strict=True)]

    def encode(self, captions: list[str]) -> tuple[Tensor, Tensor]:
        """(features [B, L, 768] zero-padded, token counts [B]) of `captions`, on CPU."""
        with self._lock:
            todo = sorted({c for c in captions if c not in self._cache}, key=lambda c: (len(c), c))
            for i in range(0, len(todo), self.batch_size):
                chunk = todo[i:i + self.batch_size]
                self._cache.update(zip(chunk, self._embed(chunk), strict=True))
            rows = [self._cache[c] for c in captions]
        lengths = torch.as_tensor([len(r) for r in rows], dtype=torch.long)
        out = torch.zeros(len(rows), int(lengths.max()) if rows else 0, self.dim)
        for i, r in enumerate(rows):
            out[i, : len(r)] = r
        return out, lengths


_INSTANCE: list[DistilBertTokens] = []
_INSTANCE_LOCK = threading.Lock()


def get_token_encoder() -> DistilBertTokens:
    """The process-wide DistilBERT token encoder (loaded on first use, then shared with its cache)."""
    with _INSTANCE_LOCK:
        if not _INSTANCE:
            _INSTANCE.append(DistilBertTokens())
        return _INSTANCE[0]
