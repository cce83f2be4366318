"""The offline text encoders: MiniLM (shape, normalisation, per-caption cache, meaningful similarities) and CLIP
(MDM's text feature on a tiny random CLIP in the official layout, from a folder or the Hugging Face cache)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from tiny_hf_models import as_hf_cache, write_tiny_clip

from sopo_ray.errors import ConfigError
from sopo_ray.models.text_encoder import CachedTextEncoder, CLIPEncoder, get_text_encoder, text_encoder_dim

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


def test_minilm_token_states_pool_to_the_sentence_embedding() -> None:
    from sopo_ray.models.token_encoder import get_token_encoder

    tokens = get_token_encoder("minilm")
    assert get_token_encoder("minilm") is tokens and tokens.raw is get_text_encoder("minilm").raw
    captions = ["a person waves with the left hand", "a person jumps then walks forward", "a person sits"]
    states, lengths = tokens.encode(captions)
    assert states.shape == (3, int(lengths.max()), 384) and lengths.min() >= 4   # [CLS] words [SEP]
    assert torch.all(states[2, int(lengths[2]):] == 0)
    mask = (torch.arange(states.shape[1])[None] < lengths[:, None]).float()[..., None]
    pooled = torch.nn.functional.normalize((states * mask).sum(1) / mask.sum(1), dim=-1)
    torch.testing.assert_close(pooled, get_text_encoder("minilm").encode(captions), atol=1e-5, rtol=0)
    swapped, n = tokens.encode(["a person walks forward then jumps"])
    assert n[0] == lengths[1] and not torch.allclose(swapped[0, : int(n[0])], states[1, : int(n[0])], atol=1e-2)
    with pytest.raises(ConfigError, match="no per-token features for text encoder 'clip'; available: distilbert"):
        get_token_encoder("clip")


def test_unknown_encoder_is_a_config_error() -> None:
    assert text_encoder_dim("minilm") == 384 and text_encoder_dim("clip") == 512
    with pytest.raises(ConfigError, match="unknown text encoder 'glove'"):
        get_text_encoder("glove")


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory) -> Path:
    return write_tiny_clip(tmp_path_factory.mktemp("clip") / "clip-vit-base-patch32")


def reference_clip_text(folder: Path, ids: list[int]) -> torch.Tensor:
    """CLIP's encode_text in plain torch ops on the saved weights: token + position embeddings, pre-norm causal
    layers with quick-GELU, final layer norm at the end token, text projection."""
    s = load_file(str(folder / "model.safetensors"))
    p = "text_model."
    x = s[p + "embeddings.token_embedding.weight"][ids] + s[p + "embeddings.position_embedding.weight"][: len(ids)]
    heads, n = 4, len(ids)
    causal = torch.full((n, n), float("-inf")).triu(1)

    def ln(h: torch.Tensor, name: str) -> torch.Tensor:
        return torch.nn.functional.layer_norm(h, h.shape[-1:], s[name + ".weight"], s[name + ".bias"], 1e-5)

    def lin(h: torch.Tensor, name: str) -> torch.Tensor:
        return h @ s[name + ".weight"].T + s[name + ".bias"]

    for i in range(2):
        q = p + f"encoder.layers.{i}."
        h = ln(x, q + "layer_norm1")
        qkv = [lin(h, q + f"self_attn.{k}_proj").reshape(n, heads, -1).transpose(0, 1) for k in "qkv"]
        att = torch.softmax(qkv[0] @ qkv[1].transpose(1, 2) / qkv[0].shape[-1] ** 0.5 + causal, -1)
        x = x + lin((att @ qkv[2]).transpose(0, 1).reshape(n, -1), q + "self_attn.out_proj")
        h = lin(ln(x, q + "layer_norm2"), q + "mlp.fc1")
        x = x + lin(h * torch.sigmoid(1.702 * h), q + "mlp.fc2")
    return ln(x, p + "final_layer_norm")[-1] @ s["text_projection.weight"].T


def test_clip_encoder_is_mdms_text_feature(tiny_clip, monkeypatch) -> None:
    monkeypatch.setenv("SOPO_CLIP_DIR", str(tiny_clip))
    encoder = CLIPEncoder()
    tok = encoder.tokenizer
    long = "a person walks forward slowly and then turns left and jumps twice while the man waves his right hand"
    captions = ["a person walks", long]
    ids, ends = encoder.token_ids(captions)
    bpe = [tok(c, add_special_tokens=False)["input_ids"] for c in captions]
    assert len(bpe[1]) > 20 and ids.shape == (2, 22)  # MDM: start + at most 20 tokens + end
    assert ids[0, : len(bpe[0]) + 2].tolist() == [tok.bos_token_id, *bpe[0], tok.eos_token_id]
    assert ids[1].tolist() == [tok.bos_token_id, *bpe[1][:20], tok.eos_token_id]
    assert ends.tolist() == [len(bpe[0]) + 1, 21]
    emb = encoder.embed(captions)
    assert emb.shape == (2, 512) and emb.dtype == torch.float32
    for row, caption_ids, end in zip(emb, ids, ends, strict=True):
        torch.testing.assert_close(row, reference_clip_text(tiny_clip, caption_ids[: end + 1].tolist()),
                                   atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(encoder.embed(captions[:1])[0], emb[0], atol=1e-6, rtol=1e-6)  # batch-independent


def test_clip_weights_come_from_the_hugging_face_cache(tiny_clip, tmp_path, monkeypatch) -> None:
    import huggingface_hub.constants

    monkeypatch.delenv("SOPO_CLIP_DIR", raising=False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "empty"))
    with pytest.raises(ConfigError, match="needs openai/clip-vit-base-patch32 .* no config.json .*hf download"):
        CLIPEncoder()
    cache = as_hf_cache(tmp_path / "hub", "openai/clip-vit-base-patch32", tiny_clip)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    assert CLIPEncoder().embed(["a person walks"]).shape == (1, 512)


@pytest.mark.parametrize("missing", ["config.json", "model.safetensors", "vocab.json"])
def test_clip_folder_missing_a_file_names_it(tiny_clip, tmp_path, monkeypatch, missing) -> None:
    folder = tmp_path / "clip"
    shutil.copytree(tiny_clip, folder)
    (folder / missing).unlink()
    monkeypatch.setenv("SOPO_CLIP_DIR", str(folder))
    with pytest.raises(ConfigError, match=f"has no {missing}.*SOPO_CLIP_DIR=DIR"):
        CLIPEncoder()


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
