"""The T2M evaluator of Guo et al. (CVPR 2022) that every text-to-motion paper reports with, and its import.

The released evaluator (t2m/text_mot_match/model/finest.tar, as EricGuo5513/text-to-motion trains it and MDM
downloads it) holds three state dicts, mapped one-to-one onto the modules below (networks/modules.py there):

    movement_encoder   Conv1d(259 -> 512, k4 s2 p1)-Dropout-LeakyReLU(0.2) twice (time / 4), then Linear(512, 512)
    motion_encoder     Linear(512 -> 1024), BiGRU(1024) from a learned h0 over length // 4 steps,
                       Linear(2048 -> 1024)-LayerNorm-LeakyReLU(0.2)-Linear(1024 -> 512)
    text_encoder       GloVe word vector (300) + Linear(15 -> 300)(POS one-hot), Linear(300 -> 512),
                       BiGRU(512) from a learned h0, Linear(1024 -> 512)-LayerNorm-LeakyReLU(0.2)-Linear(512 -> 512)

Motions are normalised with the evaluator's published mean/std (t2m_mean.npy / t2m_std.npy), padded with zeros to
196 frames as the T2M data loader pads them, and read without the 4 foot contacts. A caption is read as its
HumanML3D word/POS tokens (the texts/ files hold them): sos, at most 20 tokens, eos; a word outside the GloVe
vocabulary becomes unk/OTHER and words of the five fixed "VIP" lists take that category instead of their POS.
Embeddings are compared by Euclidean distance (`sopo_ray/evaluation/metrics.py`).
"""

from __future__ import annotations

import io
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence

from sopo_ray.checkpoint import load_foreign, match_state, save_checkpoint
from sopo_ray.data.humanml3d import parse_text_line
from sopo_ray.errors import CheckpointError, DataError
from sopo_ray.reward.tmr import as_motion_batch

KIND = "t2m_official"
"""Checkpoint kind of an imported released T2M evaluator (`evaluator.load_evaluator` reads it too)."""

POS = ("VERB", "NOUN", "DET", "ADP", "NUM", "AUX", "PRON", "ADJ", "ADV",
       "Loc_VIP", "Body_VIP", "Obj_VIP", "Act_VIP", "Desc_VIP", "OTHER")
VIP = {
    "Loc_VIP": ("left", "right", "clockwise", "counterclockwise", "anticlockwise", "forward", "back", "backward",
                "up", "down", "straight", "curve"),
    "Body_VIP": ("arm", "chin", "foot", "feet", "face", "hand", "mouth", "leg", "waist", "eye", "knee", "shoulder",
                 "thigh"),
    "Obj_VIP": ("stair", "dumbbell", "chair", "window", "floor", "car", "ball", "handrail", "baseball", "basketball"),
    "Act_VIP": ("walk", "run", "swing", "pick", "bring", "kick", "put", "squat", "throw", "hop", "dance", "jump",
                "turn", "stumble", "stop", "sit", "lift", "lower", "raise", "wash", "stand", "kneel", "stroll",
                "rub", "bend", "balance", "flap", "jog", "shuffle", "lean", "rotate", "spin", "spread", "climb"),
    "Desc_VIP": ("slowly", "carefully", "fast", "careful", "slow", "quickly", "happy", "angry", "sad", "happily",
                 "angrily", "sadly"),
}
MAX_WORDS, UNIT, MAX_FRAMES, CONTACTS = 20, 4, 196, 4
GET_IT = ("get the evaluator with MDM's prepare/download_t2m_evaluators.sh (t2m/), its GloVe with "
          "prepare/download_glove.sh and the mean/std from MDM's dataset/ (docs/humanml3d.md)")


def _head(hidden: int, out: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(2 * hidden, hidden), nn.LayerNorm(hidden), nn.LeakyReLU(0.2), nn.Linear(hidden, out))


class MovementConvEncoder(nn.Module):
    """[B, T, D - 4] -> [B, T / 4, 512] movement features."""

    def __init__(self, in_dim: int, hidden: int = 512, out: int = 512) -> None:
        super().__init__()
        self.main = nn.Sequential(nn.Conv1d(in_dim, hidden, 4, 2, 1), nn.Dropout(0.2), nn.LeakyReLU(0.2),
                                  nn.Conv1d(hidden, out, 4, 2, 1), nn.Dropout(0.2), nn.LeakyReLU(0.2))
        self.out_net = nn.Linear(out, out)

    def forward(self, x: Tensor) -> Tensor:
        return self.out_net(self.main(x.transpose(1, 2)).transpose(1, 2))


class BiGRUEncoder(nn.Module):
    """Linear in, bidirectional GRU from a learned h0 over each row's first `lengths` steps, the two final states
    through Linear-LayerNorm-LeakyReLU-Linear. With `pos_dim` it is T2M's text encoder (POS one-hots projected
    and added to the word vectors first), without it the motion encoder."""

    def __init__(self, in_dim: int, hidden: int, out: int, pos_dim: int = 0) -> None:
        super().__init__()
        if pos_dim:
            self.pos_emb = nn.Linear(pos_dim, in_dim)
        self.input_emb = nn.Linear(in_dim, hidden)
        self.gru = nn.GRU(hidden, hidden, batch_first=True, bidirectional=True)
        self.output_net = _head(hidden, out)
        self.hidden = nn.Parameter(torch.zeros(2, 1, hidden))

    def forward(self, x: Tensor, lengths: Tensor, pos: Tensor | None = None) -> Tensor:
        if pos is not None:
            x = x + self.pos_emb(pos)
        packed = pack_padded_sequence(self.input_emb(x), lengths.cpu(), batch_first=True, enforce_sorted=False)
        _, last = self.gru(packed, self.hidden.expand(-1, x.shape[0], -1).contiguous())
        return self.output_net(torch.cat([last[0], last[1]], dim=-1))


class OfficialT2MEvaluator(nn.Module):
    """The released T2M evaluator; the same interface as `T2MEvaluator` (embed_motions / embed_texts)."""

    def __init__(self, mean: np.ndarray | Tensor, std: np.ndarray | Tensor, words: list[str],
                 vectors: np.ndarray | Tensor, captions: list[str], tokens: list[str]) -> None:
        super().__init__()
        self.register_buffer("mean", torch.as_tensor(np.asarray(mean), dtype=torch.float32).reshape(-1).clone())
        self.register_buffer("std", torch.as_tensor(np.asarray(std), dtype=torch.float32).reshape(-1).clone())
        self.register_buffer("word_vectors", torch.as_tensor(np.asarray(vectors), dtype=torch.float32).clone())
        self.words = list(words)
        self.word_index = {w: i for i, w in enumerate(self.words)}
        self.captions, self.tokens = list(captions), list(tokens)
        self.token_map = dict(zip(self.captions, self.tokens, strict=True))
        dim = int(self.mean.numel())
        self.arch: dict[str, Any] = {"feature_dim": dim, "latent_dim": 512}
        self.movement_encoder = MovementConvEncoder(dim - CONTACTS)
        self.motion_encoder = BiGRUEncoder(512, 1024, 512)
        self.text_encoder = BiGRUEncoder(self.word_vectors.shape[1], 512, 512, pos_dim=len(POS))

    @property
    def device(self) -> torch.device:
        return self.mean.device

    def encode_motion(self, features: Tensor | np.ndarray, lengths: Tensor | np.ndarray | list[int]) -> Tensor:
        """Un-normalised features `[B, T, D]` (ignored past `lengths`) -> embeddings `[B, 512]`."""
        x, n = as_motion_batch(features, lengths, self.device)
        if x.shape[-1] != self.mean.numel():
            raise ValueError(f"the T2M evaluator expects {self.mean.numel()}-dim features, got {x.shape[-1]}")
        x = nn.functional.pad(x, (0, 0, 0, max(MAX_FRAMES, x.shape[1]) - x.shape[1]))
        valid = torch.arange(x.shape[1], device=self.device)[None, :] < n[:, None]
        x = torch.where(valid[..., None], (x - self.mean) / self.std, torch.zeros((), device=self.device))
        movements = self.movement_encoder(x[..., :-CONTACTS])
        return self.motion_encoder(movements, (n // UNIT).clamp_min(1))

    def word_features(self, captions: list[str]) -> tuple[Tensor, Tensor, Tensor]:
        """(GloVe vectors [B, 22, 300], POS one-hots [B, 22, 15], token counts [B]) of the captions' tokens."""
        rows = []
        for caption in captions:
            key = caption.strip()
            if key not in self.token_map:
                raise DataError(f"caption {caption!r} has no word/POS tokens in the dataset the T2M evaluator was "
                                "imported with (it reads HumanML3D's texts/ tokens); evaluate captions of data.root")
            tokens = ["sos/OTHER", *self.token_map[key].split(" ")[:MAX_WORDS], "eos/OTHER"]
            rows.append([t.rpartition("/")[::2] if "/" in t else (t, "OTHER") for t in tokens])
        vectors = torch.zeros(len(rows), MAX_WORDS + 2, self.word_vectors.shape[1], device=self.device)
        pos = torch.zeros(len(rows), MAX_WORDS + 2, len(POS), device=self.device)
        unknown = self.word_index["unk"]
        for i, row in enumerate(rows):
            for j, (word, tag) in enumerate(row):
                if word in self.word_index:
                    tag = next((k for k, words in VIP.items() if word in words), tag)
                else:
                    tag = "OTHER"
                vectors[i, j] = self.word_vectors[self.word_index.get(word, unknown)]
                pos[i, j, POS.index(tag) if tag in POS else POS.index("OTHER")] = 1.0
        return vectors, pos, torch.as_tensor([len(r) for r in rows])

    def encode_text(self, captions: list[str]) -> Tensor:
        """Captions -> embeddings `[B, 512]`."""
        vectors, pos, lengths = self.word_features(list(captions))
        return self.text_encoder(vectors, lengths, pos)

    @torch.no_grad()
    def embed_motions(self, features: np.ndarray | Tensor, lengths: np.ndarray | Tensor,
                      batch_size: int = 256) -> np.ndarray:
        """`encode_motion` in batches, as a float64 numpy array `[N, 512]` for the metrics."""
        out = [self.encode_motion(features[i:i + batch_size], lengths[i:i + batch_size]).cpu().double().numpy()
               for i in range(0, len(features), batch_size)]
        return np.concatenate(out) if out else np.zeros((0, 512))

    @torch.no_grad()
    def embed_texts(self, captions: list[str], batch_size: int = 256) -> np.ndarray:
        """`encode_text` in batches, as a float64 numpy array `[N, 512]`."""
        out = [self.encode_text(captions[i:i + batch_size]).cpu().double().numpy()
               for i in range(0, len(captions), batch_size)]
        return np.concatenate(out) if out else np.zeros((0, 512))


class _PlainUnpickler(pickle.Unpickler):
    """Unpickles only plain containers of strings and numbers (GloVe's word list and index); any Python object
    would need find_class and is refused."""

    def find_class(self, module: str, name: str) -> Any:
        raise pickle.UnpicklingError(f"refusing the Python object {module}.{name}")


def load_glove(folder: Path, prefix: str = "our_vab") -> tuple[list[str], np.ndarray]:
    """(words, vectors [V, 300] in that order) from T2M's GloVe files, read without executing pickled code."""
    try:
        vectors = np.load(folder / f"{prefix}_data.npy", allow_pickle=False)
        loaded = [_PlainUnpickler(io.BytesIO((folder / f"{prefix}_{n}.pkl").read_bytes())).load()
                  for n in ("words", "idx")]
    except (OSError, ValueError, pickle.UnpicklingError, EOFError) as exc:
        raise CheckpointError(f"GloVe files in {folder} cannot be read safely ({str(exc).splitlines()[0][:100]}); "
                              f"{GET_IT}") from None
    words, index = loaded
    if not (isinstance(words, list) and isinstance(index, dict) and vectors.ndim == 2 and "unk" in index
            and all(isinstance(index.get(w), int) and 0 <= index[w] < len(vectors) for w in words)):
        raise CheckpointError(f"{folder}: {prefix}_words.pkl / _idx.pkl / _data.npy do not form T2M's GloVe "
                              f"vocabulary (a word list, a word -> row index with 'unk', a [V, 300] array); {GET_IT}")
    return words, vectors[[index[w] for w in words]].astype(np.float32)


def load_stats(folder: Path) -> tuple[np.ndarray, np.ndarray]:
    """The evaluator's published mean/std: t2m_mean.npy / t2m_std.npy (MDM's dataset/), else mean.npy / std.npy
    (T2M's Comp_v6_KLD01/meta/)."""
    for stem in ("t2m_", ""):
        if (folder / f"{stem}mean.npy").is_file() and (folder / f"{stem}std.npy").is_file():
            mean, std = (np.load(folder / f"{stem}{n}.npy", allow_pickle=False) for n in ("mean", "std"))
            if mean.shape != std.shape or mean.ndim != 1 or not (np.isfinite(std).all() and (std > 0).all()):
                raise CheckpointError(f"{folder}: {stem}mean.npy / {stem}std.npy are not finite [D] statistics with "
                                      f"std > 0; {GET_IT}")
            return mean, std
    raise CheckpointError(f"{folder} has no t2m_mean.npy / t2m_std.npy (nor mean.npy / std.npy); {GET_IT}")


def dataset_tokens(texts: Path) -> tuple[list[str], list[str]]:
    """(captions, their word/POS token strings) of every `caption#tokens#start#end` line under a texts/ folder."""
    found: dict[str, str] = {}
    for path in sorted(texts.glob("*.txt")):
        for line in path.read_text(encoding="utf-8").splitlines():
            parsed, parts = parse_text_line(line), line.strip().split("#")
            if parsed is not None and len(parts) > 1 and parts[1].strip():
                found.setdefault(parsed[0], parts[1].strip())
    if not found:
        raise DataError(f"{texts} holds no 'caption#word/POS tokens#start#end' lines; the T2M evaluator needs the "
                        "tokens HumanML3D's texts.zip ships")
    return list(found), list(found.values())


def import_t2m(evaluator_dir: Path, stats_dir: Path, glove_dir: Path, texts: Path, data_id: str, out: Path,
               source_digest: str) -> Path:
    """Import the released T2M evaluator (weights_only, every key of its three modules checked) with its GloVe
    vocabulary, published statistics and the dataset's caption tokens, as a checkpoint of kind "t2m_official"."""
    path = evaluator_dir / "text_mot_match" / "model" / "finest.tar"
    released = load_foreign(path, "the T2M evaluator", GET_IT)
    parts = ("movement_encoder", "motion_encoder", "text_encoder")
    if not isinstance(released, dict) or not all(isinstance(released.get(p), dict) for p in parts):
        raise CheckpointError(f"{path} does not hold the evaluator's {', '.join(parts)} state dicts; {GET_IT}")
    mean, std = load_stats(stats_dir)
    words, vectors = load_glove(glove_dir)
    captions, tokens = dataset_tokens(texts)
    model = OfficialT2MEvaluator(mean, std, words, vectors, captions, tokens)
    for name in parts:
        module = getattr(model, name)
        match_state({k: v.shape for k, v in module.state_dict().items()}, released[name], f"{path} [{name}]",
                    f"the file is not the T2M evaluator for {len(mean)}-dim features")
        module.load_state_dict(released[name])
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    return save_checkpoint(out, KIND, state, {}, data_id, arch=model.arch, words=words, captions=captions,
                           tokens=tokens, imported_from=str(path), source_digest=source_digest)


def official_evaluator_from_payload(payload: dict[str, Any]) -> OfficialT2MEvaluator:
    """Rebuild an imported T2M evaluator (kind "t2m_official", eval mode) from its loaded checkpoint."""
    state = payload["state"]
    model = OfficialT2MEvaluator(state["mean"], state["std"], payload["words"], state["word_vectors"],
                                 payload["captions"], payload["tokens"])
    model.load_state_dict(state)
    return model.eval()
