"""Import of a released TMR (models/tmr_humanml3d_guoh3dfeats layout) as the reward model.

The test writes a TMR run folder the way TMR's extract step leaves it (config.json, last_weights/{motion,text,
motion_decoder}_encoder.pt with key names and shapes read from Mathux/TMR src/model/actor.py, random values),
TMR-style statistics and a tiny random DistilBERT, imports it, and compares scores with `reference_encoder`, an
independent float64 numpy transcription of ACTORStyleEncoder, on the real HumanML3D sample clip.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from released_layouts import write_tmr
from scipy.special import erf
from tiny_hf_models import write_tiny_distilbert

from sopo_ray.errors import CheckpointError
from sopo_ray.reward import load_reward
from sopo_ray.reward.tmr_official import import_tmr

torch.set_num_threads(1)
D, FF, LAYERS, HEADS = 256, 1024, 6, 4


def reference_encoder(state: dict[str, torch.Tensor], x: np.ndarray) -> np.ndarray:
    """ACTORStyleEncoder on ONE unpadded sequence x [T, nfeats] (float64): the mu token's output [d]."""
    s = {k: v.double().numpy() for k, v in state.items()}

    def lin(h: np.ndarray, name: str) -> np.ndarray:
        return h @ s[name + ".weight"].T + s[name + ".bias"]

    def layer_norm(h: np.ndarray, name: str) -> np.ndarray:
        mu, var = h.mean(-1, keepdims=True), h.var(-1, keepdims=True)
        return (h - mu) / np.sqrt(var + 1e-5) * s[name + ".weight"] + s[name + ".bias"]

    h = np.concatenate([s["tokens"], lin(x, "projection")])
    pos = np.arange(len(h))[:, None] / np.power(10000.0, np.arange(0, D, 2) / D)
    pe = np.zeros((len(h), D))
    pe[:, 0::2], pe[:, 1::2] = np.sin(pos), np.cos(pos)
    h = h + pe
    dh = D // HEADS
    for i in range(LAYERS):
        p = f"seqTransEncoder.layers.{i}."
        qkv = h @ s[p + "self_attn.in_proj_weight"].T + s[p + "self_attn.in_proj_bias"]
        q, k, v = (a.reshape(len(h), HEADS, dh).transpose(1, 0, 2) for a in np.split(qkv, 3, -1))
        logits = q @ k.transpose(0, 2, 1) / math.sqrt(dh)
        att = np.exp(logits - logits.max(-1, keepdims=True))
        att /= att.sum(-1, keepdims=True)
        h = layer_norm(h + lin((att @ v).transpose(1, 0, 2).reshape(len(h), D), p + "self_attn.out_proj"),
                       p + "norm1")
        ff = lin(h, p + "linear1")
        h = layer_norm(h + lin(0.5 * ff * (1 + erf(ff / math.sqrt(2))), p + "linear2"), p + "norm2")
    return h[0]


@pytest.fixture(scope="module")
def tmr(tmp_path_factory, humanml3d_sample):
    """(TMR run folder, stats folder, motion state, text state, DistilBERT folder, stats)."""
    root = tmp_path_factory.mktemp("tmr")
    clip = np.load(humanml3d_sample / "new_joint_vecs" / "012314.npy")
    mean, std = torch.tensor(clip.mean(0)), torch.tensor(clip.std(0))  # per-dimension, as TMR's (not group-averaged)
    run, stats, motion, text = write_tmr(root, mean, std)
    bert = write_tiny_distilbert(root / "distilbert-base-uncased")
    return run, stats, motion, text, bert, (mean.double().numpy(), std.double().numpy())


@pytest.fixture
def imported(tmr, tmp_path, monkeypatch):
    run, stats, *_ , bert, _ = tmr
    monkeypatch.setenv("SOPO_DISTILBERT_DIR", str(bert))
    import sopo_ray.models.token_encoder as token_encoder

    monkeypatch.setattr(token_encoder, "_INSTANCES", {})
    return load_reward(import_tmr(run, stats, tmp_path / "tmr.pt", "digest"))


def test_scores_match_the_reference_on_the_real_clip(tmr, imported, humanml3d_sample):
    from transformers import AutoModel, AutoTokenizer

    run, stats, motion, text, bert, (mean, std) = tmr
    clip = np.load(humanml3d_sample / "new_joint_vecs" / "012314.npy")
    lengths = [170, 96]
    feats = np.zeros((2, 170, 263), np.float32)
    feats[0], feats[1, :96] = clip, clip[40:136]
    feats[1, 96:] = np.nan  # anything past the length is ignored
    captions = ["a person serves a tennis ball", "the man waves his right hand and then sits down on a chair"]
    tok, model = AutoTokenizer.from_pretrained(bert), AutoModel.from_pretrained(bert).eval()
    z_m, z_t = [], []
    for f, n, c in zip(feats, lengths, captions, strict=True):  # one at a time, as TMR precomputes its tokens
        z_m.append(reference_encoder(motion, (f[:n] - mean) / (std + 1e-12)))
        with torch.no_grad():
            hidden = model(**tok(c, return_tensors="pt")).last_hidden_state[0].double().numpy()
        z_t.append(reference_encoder(text, hidden))
    unit = [np.asarray(z) / np.linalg.norm(z, axis=-1, keepdims=True) for z in (z_m, z_t)]
    expected = ((unit[0] * unit[1]).sum(-1) + 1) / 2
    np.testing.assert_allclose(imported.score(feats, lengths, captions).numpy(), expected, atol=1e-5)
    with torch.no_grad():
        np.testing.assert_allclose(imported.encode_motion(feats, lengths).numpy(), unit[0], atol=1e-5)
    sim = imported.motion_similarity(feats, lengths, feats[[1, 0]], [96, 170]).numpy()
    np.testing.assert_allclose(sim, [((unit[0][0] @ unit[0][1]) + 1) / 2] * 2, atol=1e-5)


def test_every_key_is_accounted_for(tmr, tmp_path):
    run, stats, motion, *_ = tmr
    for change, message in [(lambda s: s.pop("tokens"), "missing 'tokens'"),
                            (lambda s: s.update({"extra.bias": torch.zeros(3)}), "unexpected 'extra.bias'"),
                            (lambda s: s.update({"projection.weight": torch.zeros(D, 251)}), "has shape")]:
        folder = tmp_path / "run"
        (folder / "last_weights").mkdir(parents=True, exist_ok=True)
        broken = dict(motion)
        change(broken)
        torch.save(broken, folder / "last_weights" / "motion_encoder.pt")
        (folder / "last_weights" / "text_encoder.pt").write_bytes((run / "last_weights" / "text_encoder.pt")
                                                                  .read_bytes())
        with pytest.raises(CheckpointError, match=message):
            import_tmr(folder, stats, tmp_path / "out.pt", "d")
        assert not (tmp_path / "out.pt").exists()


def test_missing_files_name_the_file_and_the_fix(tmr, tmp_path):
    run, stats, *_ = tmr
    with pytest.raises(CheckpointError, match="mean.pt not found; get the pretrained TMR"):
        import_tmr(run, tmp_path, tmp_path / "out.pt", "d")
    with pytest.raises(CheckpointError, match="motion_encoder.pt not found"):
        import_tmr(tmp_path, stats, tmp_path / "out.pt", "d")


def test_distilbert_missing_is_one_line(tmr, tmp_path, monkeypatch):
    from sopo_ray.errors import ConfigError
    from sopo_ray.models.token_encoder import DistilBertTokens

    monkeypatch.setenv("SOPO_DISTILBERT_DIR", str(tmp_path))
    with pytest.raises(ConfigError, match="text encoder 'distilbert'.* has no config.json; .*hf download "
                                          "distilbert-base-uncased"):
        DistilBertTokens()
