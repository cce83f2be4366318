"""Import of the released T2M evaluator (t2m/text_mot_match/model/finest.tar, GloVe our_vab_*, t2m_mean/std).

The test writes finest.tar with the three state dicts in T2M's layout (key names and shapes read from
EricGuo5513/text-to-motion networks/modules.py and evaluator_wrapper.py, random values), a small GloVe vocabulary
pickled as T2M's, the published mean/std of the sample folder, and a HumanML3D folder of crops of the real clip
with word/POS captions; it imports them and compares embeddings with `reference_motion` / `reference_text`, an
independent float64 numpy transcription (explicit convolutions and GRU equations), and runs the evaluation
protocol on it unchanged.
"""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch
from released_layouts import CAPTION_LINES, write_humanml3d, write_t2m

from sopo_ray.config import load_config
from sopo_ray.data import load_dataset
from sopo_ray.errors import CheckpointError, DataError
from sopo_ray.evaluation.evaluator import load_evaluator
from sopo_ray.evaluation.protocol import evaluate_real
from sopo_ray.evaluation.t2m_official import import_t2m

torch.set_num_threads(1)
POS = ["VERB", "NOUN", "DET", "ADP", "NUM", "AUX", "PRON", "ADJ", "ADV", "Loc_VIP", "Body_VIP", "Obj_VIP",
       "Act_VIP", "Desc_VIP", "OTHER"]


def _np(state: dict) -> dict[str, np.ndarray]:
    return {k: v.double().numpy() for k, v in state.items()}


def gru_final(s: dict, x: np.ndarray, h: np.ndarray, suffix: str) -> np.ndarray:
    """PyTorch's GRU equations over the rows of x [L, in] from state h [H] (gates r, z, n stacked)."""
    w_ih, w_hh = s[f"gru.weight_ih_l0{suffix}"], s[f"gru.weight_hh_l0{suffix}"]
    b_ih, b_hh = s[f"gru.bias_ih_l0{suffix}"], s[f"gru.bias_hh_l0{suffix}"]
    for row in x:
        gi, gh = w_ih @ row + b_ih, w_hh @ h + b_hh
        r = 1 / (1 + np.exp(-(gi[: len(h)] + gh[: len(h)])))
        z = 1 / (1 + np.exp(-(gi[len(h): 2 * len(h)] + gh[len(h): 2 * len(h)])))
        n = np.tanh(gi[2 * len(h):] + r * gh[2 * len(h):])
        h = (1 - z) * n + z * h
    return h


def bigru_head(s: dict, x: np.ndarray) -> np.ndarray:
    """Both directions' final states -> Linear-LayerNorm-LeakyReLU-Linear."""
    last = np.concatenate([gru_final(s, x, s["hidden"][0, 0], ""), gru_final(s, x[::-1], s["hidden"][1, 0],
                                                                             "_reverse")])
    y = s["output_net.0.weight"] @ last + s["output_net.0.bias"]
    y = (y - y.mean()) / np.sqrt(y.var() + 1e-5) * s["output_net.1.weight"] + s["output_net.1.bias"]
    y = np.where(y > 0, y, 0.2 * y)
    return s["output_net.3.weight"] @ y + s["output_net.3.bias"]


def reference_motion(ckpt: dict, x: np.ndarray, length: int, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    """T2M's motion path for one motion: normalised, zero-padded to 196 frames, contacts dropped."""
    m = np.zeros((196, x.shape[1]))
    m[:length] = (x[:length] - mean) / std
    h = m[:, :-4]
    mv = _np(ckpt["movement_encoder"])
    for k in ("main.0", "main.3"):
        w, b = mv[k + ".weight"], mv[k + ".bias"]
        padded = np.pad(h, ((1, 1), (0, 0)))
        steps = (len(padded) - 4) // 2 + 1
        h = np.stack([sum(w[:, :, j] @ padded[2 * t + j] for j in range(4)) + b for t in range(steps)])
        h = np.where(h > 0, h, 0.2 * h)
    h = h @ mv["out_net.weight"].T + mv["out_net.bias"]
    s = _np(ckpt["motion_encoder"])
    return bigru_head(s, (h @ s["input_emb.weight"].T + s["input_emb.bias"])[: length // 4])


def reference_text(ckpt: dict, tokens: str, glove: dict[str, np.ndarray]) -> np.ndarray:
    """T2M's text path: sos + first 20 tokens + eos, GloVe vector + projected POS one-hot (VIP words and unknown
    words as T2M's WordVectorizer treats them)."""
    vip = {"left": "Loc_VIP", "forward": "Loc_VIP", "hand": "Body_VIP", "chair": "Obj_VIP", "ball": "Obj_VIP",
           "walk": "Act_VIP", "sit": "Act_VIP", "slowly": "Desc_VIP"}
    s = _np(ckpt["text_encoder"])
    rows = []
    for token in ["sos/OTHER", *tokens.split(" ")[:20], "eos/OTHER"]:
        word, tag = token.split("/")
        if word not in glove:
            word, tag = "unk", "OTHER"
        onehot = np.zeros(15)
        onehot[POS.index(vip.get(word, tag)) if vip.get(word, tag) in POS else 14] = 1
        rows.append(glove[word] + s["pos_emb.weight"] @ onehot + s["pos_emb.bias"])
    return bigru_head(s, np.stack(rows) @ s["input_emb.weight"].T + s["input_emb.bias"])


@pytest.fixture(scope="module")
def released(tmp_path_factory, humanml3d_sample):
    root = tmp_path_factory.mktemp("t2m")
    evaluator_dir, glove_dir, ckpt, glove = write_t2m(root)
    clip = np.load(humanml3d_sample / "new_joint_vecs" / "012314.npy")
    data = write_humanml3d(root / "HumanML3D", clip, np.load(humanml3d_sample / "Mean.npy"),
                           np.load(humanml3d_sample / "Std.npy"))
    cfg = load_config(None, ["data.source=humanml3d", f"data.root={data}", "evaluator.r_precision_pool=3",
                             "evaluator.num_captions=6", "evaluator.replications=2", "evaluator.diversity_pairs=4"])
    test = load_dataset(cfg.data, "test")
    out = import_t2m(evaluator_dir, humanml3d_sample / "evaluator_norm", glove_dir, data / "texts", test.data_id,
                     root / "t2m.pt", "digest")
    return cfg, test, load_evaluator(out, test.data_id), ckpt, glove, root


def test_motion_embeddings_match_the_reference_on_the_real_clip(released, humanml3d_sample):
    cfg, test, evaluator, ckpt, *_ = released
    mean, std = (np.load(humanml3d_sample / "evaluator_norm" / f"t2m_{n}.npy") for n in ("mean", "std"))
    ours = evaluator.embed_motions(test.features, test.lengths)
    for i in (0, 3, 5):
        ref = reference_motion(ckpt, test.features[i].astype(np.float64), int(test.lengths[i]), mean, std)
        # float32 convolutions and a bi-GRU against a float64 reference: the CPU's kernels decide the last digits
        # (1.2e-5 seen on one machine); a wrong layer, order or normalisation is off by 1e-2 or more
        np.testing.assert_allclose(ours[i], ref, atol=1e-4, rtol=1e-5)
    batch_of_one = evaluator.embed_motions(test.features[[2]], test.lengths[[2]])
    np.testing.assert_allclose(batch_of_one[0], ours[2], atol=1e-5)  # no dependence on the batch's padding


def test_text_embeddings_match_the_reference(released):
    cfg, test, evaluator, ckpt, glove, _ = released
    captions = [line.split("#")[0] for line in CAPTION_LINES]
    ours = evaluator.embed_texts(captions)
    for i, line in enumerate(CAPTION_LINES):  # the fifth has 36 tokens (cropped to 20) and a word outside GloVe
        np.testing.assert_allclose(ours[i], reference_text(ckpt, line.split("#")[1], glove), atol=1e-5, rtol=1e-5)
    with pytest.raises(DataError, match="has no word/POS tokens"):
        evaluator.embed_texts(["a caption that is not in the dataset"])


def test_the_protocol_runs_unchanged_with_the_released_evaluator(released):
    cfg, test, evaluator, *_ = released
    row = evaluate_real(evaluator, None, test, cfg, seed=0)
    assert set(row) == {"R@1", "R@2", "R@3", "FID", "MM-Dist", "Diversity"}
    assert all(np.isfinite(v[0]) for v in row.values())
    assert row["R@1"][0] <= row["R@2"][0] <= row["R@3"][0] == 1.0  # a pool of 3 always holds the match at top 3


def test_bad_files_are_clear_errors(released, tmp_path, humanml3d_sample):
    cfg, test, _, ckpt, _, root = released
    stats = humanml3d_sample / "evaluator_norm"
    texts = cfg.data.root / "texts"
    broken = dict(ckpt, motion_encoder={k: v for k, v in ckpt["motion_encoder"].items() if k != "hidden"})
    (tmp_path / "t2m" / "text_mot_match" / "model").mkdir(parents=True)
    torch.save(broken, tmp_path / "t2m" / "text_mot_match" / "model" / "finest.tar")
    with pytest.raises(CheckpointError, match=r"\[motion_encoder\]: 0 missing|missing 'hidden'"):
        import_t2m(tmp_path / "t2m", stats, root / "glove", texts, test.data_id, tmp_path / "o.pt", "d")
    with pytest.raises(CheckpointError, match="finest.tar not found; get the evaluator"):
        import_t2m(tmp_path, stats, root / "glove", texts, test.data_id, tmp_path / "o.pt", "d")
    with pytest.raises(CheckpointError, match="no t2m_mean.npy"):
        import_t2m(root / "t2m", tmp_path, root / "glove", texts, test.data_id, tmp_path / "o.pt", "d")
    (tmp_path / "glove").mkdir()
    for name in ("our_vab_data.npy", "our_vab_idx.pkl"):
        (tmp_path / "glove" / name).write_bytes((root / "glove" / name).read_bytes())
    (tmp_path / "glove" / "our_vab_words.pkl").write_bytes(pickle.dumps([np.float32(1.0)]))  # a numpy object
    with pytest.raises(CheckpointError, match="cannot be read safely .*refusing the Python object"):
        import_t2m(root / "t2m", stats, tmp_path / "glove", texts, test.data_id, tmp_path / "o.pt", "d")
    assert not (tmp_path / "o.pt").exists()
