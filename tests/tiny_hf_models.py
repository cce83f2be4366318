"""Tiny random-weight Hugging Face models in the official layouts (CLIP, DistilBERT), written to disk the way the
released ones are, so the loading code of the text encoders runs for real without any download."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch

WORDS = ["a", "person", "walks", "forward", "slowly", "and", "then", "turns", "left", "jumps", "twice", "the",
         "man", "waves", "his", "right", "hand", "kicks", "sits", "down", "on", "chair", "serves", "tennis", "ball"]


def _byte_alphabet() -> list[str]:
    """GPT-2 / CLIP byte-to-unicode alphabet (256 printable characters)."""
    keep = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), 256))
    chars, extra = keep[:], 0
    for b in range(256):
        if b not in keep:
            keep.append(b)
            chars.append(256 + extra)
            extra += 1
    return [chr(c) for c in chars]


def write_tiny_clip(folder: Path, seed: int = 0) -> Path:
    """A full CLIP (text + vision towers, 512-d projections) with a byte-level BPE vocabulary of single bytes and
    a few merges, saved like openai/clip-vit-base-patch32 (config.json, model.safetensors, vocab.json, merges)."""
    from transformers import CLIPConfig, CLIPModel, CLIPTokenizer

    folder.mkdir(parents=True, exist_ok=True)
    alphabet = _byte_alphabet()
    merges = ["p e", "pe r", "w a", "wa l", "l k</w>"]
    tokens = alphabet + [c + "</w>" for c in alphabet] + [m.replace(" ", "") for m in merges]
    tokens += ["<|startoftext|>", "<|endoftext|>"]
    vocab = {t: i for i, t in enumerate(dict.fromkeys(tokens))}
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n")
    tokenizer = CLIPTokenizer(vocab=str(folder / "vocab.json"), merges=str(folder / "merges.txt"))
    tokenizer.save_pretrained(folder)
    torch.manual_seed(seed)
    text = {"vocab_size": len(vocab), "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
            "num_attention_heads": 4, "max_position_embeddings": 77, "hidden_act": "quick_gelu",
            "bos_token_id": vocab["<|startoftext|>"], "eos_token_id": vocab["<|endoftext|>"]}
    vision = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1, "num_attention_heads": 4,
              "image_size": 32, "patch_size": 16}
    model = CLIPModel(CLIPConfig(text_config=text, vision_config=vision, projection_dim=512))
    with torch.no_grad():  # LayerNorms at their defaults would hide a missing or misplaced norm
        for name, p in model.named_parameters():
            if "layer_norm" in name or "layernorm" in name:
                p.add_(torch.randn_like(p) * 0.2)
    model.save_pretrained(folder)
    return folder


def write_tiny_distilbert(folder: Path, seed: int = 0) -> Path:
    """distilbert-base-uncased's layout (768 wide, as TMR's text encoder expects) with one layer and a small
    lower-case WordPiece vocabulary."""
    from transformers import DistilBertConfig, DistilBertModel, DistilBertTokenizer

    folder.mkdir(parents=True, exist_ok=True)
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS, ".", ",", "##s", "##ing"]
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n")
    DistilBertTokenizer(vocab_file=str(folder / "vocab.txt"), do_lower_case=True).save_pretrained(folder)
    torch.manual_seed(seed)
    config = DistilBertConfig(vocab_size=len(vocab), dim=768, n_layers=1, n_heads=12, hidden_dim=64,
                              max_position_embeddings=64)
    DistilBertModel(config).save_pretrained(folder)
    return folder


def as_hf_cache(cache: Path, repo_id: str, folder: Path, revision: str = "0" * 40) -> Path:
    """Lay `folder` out as the Hugging Face cache keeps a downloaded model: models--org--name/snapshots/REV/ and
    refs/main naming REV. Returns the cache root."""
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    shutil.copytree(folder, repo / "snapshots" / revision)
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / "main").write_text(revision)
    return cache
