"""The offline MiniLM text encoder: shape, normalisation, per-caption cache, meaningful similarities."""

from __future__ import annotations

import pytest
import torch

from sopo_ray.errors import ConfigError
from sopo_ray.models.text_encoder import CachedTextEncoder, get_text_encoder, text_encoder_dim

torch.set_num_threads(1)


def test_minilm_embeddings_are_cached_normalised_and_meaningful() -> None:
    encoder = get_text_encoder("minilm")
    assert get_text_encoder("minilm") is encoder
    captions = ["a person walks forward", "someone walks forward slowly", "a person sits down on a chair",
                "a person walks forward"]
    emb = encoder.encode(captions)
    assert emb.shape == (4, 384) and emb.dtype == torch.float32
    torch.testing.assert_close(emb.norm(dim=-1), torch.ones(4))
    assert torch.equal(emb[0], emb[3])
    assert float(emb[0] @ emb[1]) > float(emb[0] @ emb[2]) + 0.1
    before = encoder.cache_size
    again = encoder.encode(["someone walks forward slowly"])
    assert encoder.cache_size == before
    assert torch.equal(again[0], emb[1])
    assert encoder.encode([]).shape == (0, 384)


def test_unknown_encoder_is_a_config_error() -> None:
    assert text_encoder_dim("minilm") == 384
    with pytest.raises(ConfigError, match="unknown text encoder 'clip'"):
        get_text_encoder("clip")


class CountingEncoder:
    """A deterministic raw encoder that counts the texts it embeds (stands in for a second model)."""

    dim = 3

    def __init__(self) -> None:
        self.calls = 0

    def embed(self, texts: list[str]) -> torch.Tensor:
        self.calls += len(texts)
        return torch.tensor([[len(t), t.count("a"), 1.0] for t in texts])


def test_cache_file_round_trip(tmp_path) -> None:
    first = CachedTextEncoder("counting", CountingEncoder())
    emb = first.encode(["walk", "a jump", "walk"])
    assert first.raw.calls == 2
    first.save_cache(tmp_path / "cache.pt")
    second = CachedTextEncoder("counting", CountingEncoder())
    assert second.load_cache(tmp_path / "cache.pt") == 2
    assert torch.equal(second.encode(["a jump", "walk"]), emb[[1, 0]])
    assert second.raw.calls == 0
    other = CachedTextEncoder("minilm", CountingEncoder())
    assert other.load_cache(tmp_path / "cache.pt") == 0
    assert other.load_cache(tmp_path / "missing.pt") == 0
    (tmp_path / "broken.pt").write_bytes(b"not a torch file")
    assert other.load_cache(tmp_path / "broken.pt") == 0
