"""Files in the layouts the released projects ship, with random weights (nothing can be downloaded here).

Key names and shapes are read from the public code: MDM's model/mdm.py (GuyTevet/motion-diffusion-model), TMR's
src/model/actor.py and extract step (Mathux/TMR), T2M's networks/modules.py, evaluator_wrapper.py and
utils/word_vectorizer.py (EricGuo5513/text-to-motion). The writers are independent of sopo_ray's modules.
"""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import torch

GLOVE_WORDS = ["sos", "eos", "unk", "a", "person", "walk", "forward", "left", "hand", "wave", "his", "and", "slowly",
               "chair", "sit", "on", "the", "man", "serve", "ball"]
CAPTION_LINES = [  # HumanML3D texts/ lines: caption#word/POS tokens#start#end
    "a person walks forward slowly.#a/DET person/NOUN walk/VERB forward/ADV slowly/ADV#0.0#0.0",
    "the man waves his left hand.#the/DET man/NOUN wave/VERB his/PRON left/ADJ hand/NOUN#0.0#0.0",
    "a person sits on a chair.#a/DET person/NOUN sit/VERB on/ADP a/DET chair/NOUN#0.0#0.0",
    "someone serves a ball.#someone/PRON serve/VERB a/DET ball/NOUN#0.0#0.0",
    ("a person walks and walks and walks and walks and walks and walks and walks and walks forward.#" +
     " ".join(["a/DET", "person/NOUN"] + ["walk/VERB", "and/CCONJ"] * 8 + ["walk/VERB", "forward/ADV"]) + "#0.0#0.0"),
    "the man serves the ball slowly.#the/DET man/NOUN serve/VERB the/DET ball/NOUN slowly/ADV#0.0#0.0",
]


def sinusoid(rows: int, dim: int) -> np.ndarray:
    """pe[p, 2i] = sin(p / 10000^(2i/dim)), pe[p, 2i+1] = cos(p / 10000^(2i/dim))."""
    angle = np.arange(rows)[:, None] / np.power(10000.0, np.arange(0, dim, 2) / dim)
    pe = np.zeros((rows, dim))
    pe[:, 0::2], pe[:, 1::2] = np.sin(angle), np.cos(angle)
    return pe


def _randn(g: torch.Generator, shape: tuple[int, ...], name: str) -> torch.Tensor:
    """Small random weights; layer-norm scales around 1."""
    base = 1.0 if name.endswith(("norm1.weight", "norm2.weight")) or name == "ln.weight" else 0.0
    return base + torch.randn(*shape, generator=g) * 0.05


def _post_norm_layers(prefix: str, layers: int, d: int, ff: int) -> dict[str, tuple[int, ...]]:
    """Key shapes of torch's nn.TransformerEncoder layers (the released MDM and TMR both use them)."""
    shapes = {}
    for i in range(layers):
        p = f"{prefix}layers.{i}."
        shapes.update({p + "self_attn.in_proj_weight": (3 * d, d), p + "self_attn.in_proj_bias": (3 * d,),
                       p + "self_attn.out_proj.weight": (d, d), p + "self_attn.out_proj.bias": (d,),
                       p + "linear1.weight": (ff, d), p + "linear1.bias": (ff,), p + "linear2.weight": (d, ff),
                       p + "linear2.bias": (d,), p + "norm1.weight": (d,), p + "norm1.bias": (d,),
                       p + "norm2.weight": (d,), p + "norm2.bias": (d,)})
    return shapes


def mdm_state(d: int = 512, layers: int = 8, ff: int = 1024, feats: int = 263, clip: int = 512,
              seed: int = 0) -> dict[str, torch.Tensor]:
    """A state dict as MDM's training loop saves it (CLIP removed, both position-table buffers kept)."""
    g = torch.Generator().manual_seed(seed)
    shapes = {"input_process.poseEmbedding.weight": (d, feats), "input_process.poseEmbedding.bias": (d,),
              "embed_timestep.time_embed.0.weight": (d, d), "embed_timestep.time_embed.0.bias": (d,),
              "embed_timestep.time_embed.2.weight": (d, d), "embed_timestep.time_embed.2.bias": (d,),
              "embed_text.weight": (d, clip), "embed_text.bias": (d,), "output_process.poseFinal.weight": (feats, d),
              "output_process.poseFinal.bias": (feats,), **_post_norm_layers("seqTransEncoder.", layers, d, ff)}
    state = {k: _randn(g, v, k) for k, v in shapes.items()}
    pe = torch.as_tensor(sinusoid(5000, d), dtype=torch.float32)[:, None, :]
    return {**state, "sequence_pos_encoder.pe": pe, "embed_timestep.sequence_pos_encoder.pe": pe.clone()}


def tmr_encoder_state(nfeats: int, g: torch.Generator, d: int = 256, layers: int = 6,
                      ff: int = 1024) -> dict[str, torch.Tensor]:
    """One ACTORStyleEncoder state dict (vae: two tokens), as TMR's extract step saves it."""
    shapes = {"projection.weight": (d, nfeats), "projection.bias": (d,), **_post_norm_layers("seqTransEncoder.",
                                                                                              layers, d, ff)}
    return {**{k: _randn(g, v, k) for k, v in shapes.items()}, "tokens": torch.randn(2, d, generator=g)}


def write_tmr(root: Path, mean: torch.Tensor, std: torch.Tensor, seed: int = 0) -> tuple[Path, Path, dict, dict]:
    """models/tmr_humanml3d_guoh3dfeats (config.json, last_weights/*.pt) and stats/humanml3d/guoh3dfeats under
    `root`. Returns (run folder, stats folder, motion encoder state, text encoder state)."""
    run = root / "models" / "tmr_humanml3d_guoh3dfeats"
    (run / "last_weights").mkdir(parents=True)
    g = torch.Generator().manual_seed(seed)
    motion, text = tmr_encoder_state(263, g), tmr_encoder_state(768, g)
    torch.save(motion, run / "last_weights" / "motion_encoder.pt")
    torch.save(text, run / "last_weights" / "text_encoder.pt")
    torch.save({"final_layer.weight": torch.zeros(263, 256)}, run / "last_weights" / "motion_decoder.pt")
    enc = {"nfeats": 263, "vae": True, "latent_dim": 256, "ff_size": 1024, "num_layers": 6, "num_heads": 4,
           "dropout": 0.1, "activation": "gelu"}
    model = {"motion_encoder": enc, "text_encoder": {**enc, "nfeats": 768}}
    (run / "config.json").write_text(json.dumps({"model": model}))
    stats = root / "stats" / "humanml3d" / "guoh3dfeats"
    stats.mkdir(parents=True)
    torch.save(mean, stats / "mean.pt")
    torch.save(std, stats / "std.pt")
    return run, stats, motion, text


def _gru(prefix: str, i: int, h: int) -> dict[str, tuple[int, ...]]:
    out = {}
    for suffix in ("", "_reverse"):
        out.update({f"{prefix}weight_ih_l0{suffix}": (3 * h, i), f"{prefix}weight_hh_l0{suffix}": (3 * h, h),
                    f"{prefix}bias_ih_l0{suffix}": (3 * h,), f"{prefix}bias_hh_l0{suffix}": (3 * h,)})
    return out


def _head(h: int, out: int) -> dict[str, tuple[int, ...]]:
    return {"output_net.0.weight": (h, 2 * h), "output_net.0.bias": (h,), "output_net.1.weight": (h,),
            "output_net.1.bias": (h,), "output_net.3.weight": (out, h), "output_net.3.bias": (out,)}


def t2m_checkpoint(seed: int = 0, feats: int = 263) -> dict:
    """finest.tar's dict: the three modules' state dicts, optimizer states and counters."""
    g = torch.Generator().manual_seed(seed)
    movement = {"main.0.weight": (512, feats - 4, 4), "main.0.bias": (512,), "main.3.weight": (512, 512, 4),
                "main.3.bias": (512,), "out_net.weight": (512, 512), "out_net.bias": (512,)}
    text = {"pos_emb.weight": (300, 15), "pos_emb.bias": (300,), "input_emb.weight": (512, 300),
            "input_emb.bias": (512,), **_gru("gru.", 512, 512), **_head(512, 512), "hidden": (2, 1, 512)}
    motion = {"input_emb.weight": (1024, 512), "input_emb.bias": (1024,), **_gru("gru.", 1024, 1024),
              **_head(1024, 512), "hidden": (2, 1, 1024)}

    def draw(shapes: dict[str, tuple[int, ...]]) -> dict[str, torch.Tensor]:
        return {k: (1.0 if k == "output_net.1.weight" else 0.0) + torch.randn(*v, generator=g) * 0.05
                for k, v in shapes.items()}

    return {"movement_encoder": draw(movement), "text_encoder": draw(text), "motion_encoder": draw(motion),
            "opt_text_encoder": {"state": {}, "param_groups": []}, "epoch": 12, "iter": 3400}


def write_t2m(root: Path, seed: int = 0) -> tuple[Path, Path, dict, dict[str, np.ndarray]]:
    """t2m/text_mot_match/model/finest.tar and glove/our_vab_{data.npy,words.pkl,idx.pkl} under `root`.
    Returns (evaluator folder, GloVe folder, the checkpoint dict, word -> vector)."""
    ckpt = t2m_checkpoint(seed)
    (root / "t2m" / "text_mot_match" / "model").mkdir(parents=True)
    torch.save(ckpt, root / "t2m" / "text_mot_match" / "model" / "finest.tar")
    (root / "glove").mkdir()
    vectors = np.random.default_rng(seed).normal(size=(len(GLOVE_WORDS), 300)).astype(np.float32)
    order = np.random.default_rng(seed + 1).permutation(len(GLOVE_WORDS))  # array rows not in word-list order
    np.save(root / "glove" / "our_vab_data.npy", vectors[order])
    (root / "glove" / "our_vab_words.pkl").write_bytes(pickle.dumps(GLOVE_WORDS, protocol=3))
    index = {w: int(np.where(order == i)[0][0]) for i, w in enumerate(GLOVE_WORDS)}
    (root / "glove" / "our_vab_idx.pkl").write_bytes(pickle.dumps(index, protocol=3))
    return root / "t2m", root / "glove", ckpt, dict(zip(GLOVE_WORDS, vectors.astype(np.float64), strict=True))


def write_humanml3d(root: Path, clip: np.ndarray, mean: np.ndarray, std: np.ndarray) -> Path:
    """A HumanML3D folder of six crops of the real clip (60..120 frames), one captioned line each (with word/POS
    tokens), every motion in every split."""
    (root / "new_joint_vecs").mkdir(parents=True)
    (root / "texts").mkdir()
    ids = [f"{i:06d}" for i in range(len(CAPTION_LINES))]
    for i, (motion_id, line) in enumerate(zip(ids, CAPTION_LINES, strict=True)):
        np.save(root / "new_joint_vecs" / f"{motion_id}.npy", clip[i * 10: i * 10 + 60 + 17 * i])
        (root / "texts" / f"{motion_id}.txt").write_text(line + "\n")
    for split in ("train", "val", "test"):
        (root / f"{split}.txt").write_text("\n".join(ids) + "\n")
    np.save(root / "Mean.npy", mean)
    np.save(root / "Std.npy", std)
    return root
