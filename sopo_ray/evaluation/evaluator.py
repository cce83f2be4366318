"""An independent text-to-motion evaluator in the style of Guo et al. (2022), used ONLY to report results.

It shares nothing with the reward model (`sopo_ray/reward/tmr.py`) but the data: another architecture, another
seed, another normaliser, and no pretrained text model at all. Motion branch (as T2M): features without the
foot contacts, normalised with the dataset's group-averaged mean/std, two stride-2 Conv1d layers (time / 4),
then a bidirectional GRU packed to length // 4; text branch: word embeddings learned from the train split's
vocabulary, a bidirectional GRU packed to the sentence length. Both end in Linear-LayerNorm-LeakyReLU-Linear
into a Euclidean space where T2M's metrics are computed (distances, not cosines).

Training (train split only): T2M's hinge loss on Euclidean distances, d^2 for matched pairs and
max(0, margin - d)^2 for mismatched ones, using every in-batch mismatch (T2M uses one cyclic shift) except
pairs with identical captions. Motions are cropped to random windows of a multiple of 4 frames, as T2M does.
"""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn
from torch import Tensor, nn

from sopo_ray.checkpoint import load_checkpoint
from sopo_ray.config import Config, EvaluatorConfig
from sopo_ray.data.dataset import MotionDataset
from sopo_ray.errors import CheckpointError
from sopo_ray.evaluation import metrics
from sopo_ray.fitting import fit_and_save
from sopo_ray.lr_schedule import warmup_cosine
from sopo_ray.tracking import MetricsWriter

KIND = "evaluator"
SPECIALS = ("<pad>", "<unk>", "<sos>", "<eos>")
UNIT = 4  # the two stride-2 convolutions downsample time by 4
CONTACT_DIMS = 4  # HumanML3D / KIT-ML features end with 4 foot-contact flags, which T2M's evaluator drops
MAX_WORDS = 20  # T2M keeps at most 20 words (+ sos/eos)


def words(caption: str) -> list[str]:
    """Lower-cased word tokens of a caption (letters, digits and apostrophes), at most MAX_WORDS."""
    return re.findall(r"[a-z0-9']+", caption.lower())[:MAX_WORDS]


def build_vocab(captions: list[list[str]]) -> list[str]:
    """The vocabulary of a (train) split: special tokens first, then words by descending count, then A-Z."""
    counts = Counter(w for caps in captions for c in caps for w in words(c))
    return [*SPECIALS, *sorted(counts, key=lambda w: (-counts[w], w))]


class _BiGRUHead(nn.Module):
    """Sequence `[B, L, h]` with `lengths` -> bidirectional GRU final states (learned h0) -> `[B, latent]`.

    Equivalent to a packed `nn.GRU(bidirectional=True)`: the forward GRU's state at step length - 1, and the
    backward GRU run on each sequence reversed within its length. Padded steps never reach either state; on
    CPU this is about twice as fast as a PackedSequence.
    """

    def __init__(self, hidden: int, latent: int) -> None:
        super().__init__()
        self.forward_gru = nn.GRU(hidden, hidden, batch_first=True)
        self.backward_gru = nn.GRU(hidden, hidden, batch_first=True)
        self.h0 = nn.Parameter(torch.zeros(2, 1, hidden))
        self.out = nn.Sequential(nn.Linear(2 * hidden, hidden), nn.LayerNorm(hidden), nn.LeakyReLU(0.2),
                                 nn.Linear(hidden, latent))

    def forward(self, h: Tensor, lengths: Tensor) -> Tensor:
        b, steps, width = h.shape
        lengths = lengths.to(h.device)
        last = lengths - 1
        rows = torch.arange(b, device=h.device)
        flip = (last[:, None] - torch.arange(steps, device=h.device)[None, :]).clamp_min(0)
        reversed_h = h.gather(1, flip[..., None].expand(-1, -1, width))
        fwd, _ = self.forward_gru(h, self.h0[:1].expand(-1, b, -1).contiguous())
        bwd, _ = self.backward_gru(reversed_h, self.h0[1:].expand(-1, b, -1).contiguous())
        return self.out(torch.cat([fwd[rows, last], bwd[rows, last]], dim=-1))


class T2MEvaluator(nn.Module):
    """Motion and text encoders into one Euclidean space; see the module docstring."""

    def __init__(self, mean: np.ndarray | Tensor, std: np.ndarray | Tensor, vocab: list[str],
                 hidden_dim: int = 256, latent_dim: int = 128) -> None:
        super().__init__()
        mean_t = torch.as_tensor(np.asarray(mean), dtype=torch.float32).reshape(-1)
        std_t = torch.as_tensor(np.asarray(std), dtype=torch.float32).reshape(-1)
        self.register_buffer("mean", mean_t)
        self.register_buffer("std", std_t.clamp_min(1e-6))
        self.vocab = list(vocab)
        self.word_index = {w: i for i, w in enumerate(self.vocab)}
        self.arch: dict[str, Any] = {"feature_dim": int(mean_t.numel()), "hidden_dim": hidden_dim,
                                     "latent_dim": latent_dim}
        in_dim = int(mean_t.numel()) - CONTACT_DIMS
        self.conv1 = nn.Sequential(nn.Conv1d(in_dim, hidden_dim, 4, 2, 1), nn.Dropout(0.2), nn.LeakyReLU(0.2))
        self.conv2 = nn.Sequential(nn.Conv1d(hidden_dim, hidden_dim, 4, 2, 1), nn.Dropout(0.2), nn.LeakyReLU(0.2))
        self.movement_out = nn.Linear(hidden_dim, hidden_dim)
        self.motion_in = nn.Linear(hidden_dim, hidden_dim)
        self.motion_head = _BiGRUHead(hidden_dim, latent_dim)
        self.word_emb = nn.Embedding(len(self.vocab), hidden_dim, padding_idx=0)
        self.text_in = nn.Linear(hidden_dim, hidden_dim)
        self.text_head = _BiGRUHead(hidden_dim, latent_dim)

    @property
    def device(self) -> torch.device:
        return self.mean.device

    def encode_motion(self, features: Tensor | np.ndarray, lengths: Tensor | np.ndarray | list[int]) -> Tensor:
        """Un-normalised features `[B, T, D]` (ignored past `lengths`) -> embeddings `[B, latent]`."""
        if isinstance(features, np.ndarray):  # datasets hold read-only arrays; torch wants writable memory
            features = np.require(features, np.float32, ["W"])
        x = torch.as_tensor(features, dtype=torch.float32, device=self.device)
        n = torch.as_tensor(lengths, dtype=torch.long, device=self.device).reshape(-1)
        if x.ndim != 3 or x.shape[-1] != self.mean.numel() or len(n) != len(x):
            raise ValueError(f"evaluator expects features [B, T, {self.mean.numel()}] and B lengths, got "
                             f"{tuple(x.shape)} and {len(n)}")
        t_max = max(UNIT, int(n.max()))
        x = F.pad(x[:, :t_max], (0, 0, 0, max(0, t_max - x.shape[1])))
        valid = torch.arange(t_max, device=self.device)[None, :] < n[:, None]
        x = torch.where(valid[..., None], (x - self.mean) / self.std, torch.zeros((), device=self.device))
        h = self.conv1(x[..., :-CONTACT_DIMS].transpose(1, 2))
        # steps past length // 2 would see the zero padding's bias; zero them so the embedding does not depend
        # on how much padding the batch has
        h = h * (torch.arange(h.shape[-1], device=self.device)[None, :] < (n // 2)[:, None])[:, None]
        h = self.conv2(h).transpose(1, 2)
        h = self.motion_in(self.movement_out(h))
        return self.motion_head(h, (n // UNIT).clamp(1, h.shape[1]))

    def tokenize(self, captions: list[str]) -> tuple[Tensor, Tensor]:
        """Captions -> token ids `[B, L]` (sos, words, eos, then padding; unknown words -> <unk>) and lengths."""
        rows = [[2, *(self.word_index.get(w, 1) for w in words(c)), 3] for c in captions]
        ids = torch.zeros(len(rows), max(len(r) for r in rows), dtype=torch.long)
        for i, r in enumerate(rows):
            ids[i, : len(r)] = torch.as_tensor(r)
        return ids.to(self.device), torch.as_tensor([len(r) for r in rows])

    def encode_text(self, captions: list[str]) -> Tensor:
        """Captions -> embeddings `[B, latent]`."""
        ids, lengths = self.tokenize(list(captions))
        return self.text_head(self.text_in(self.word_emb(ids)), lengths)

    @torch.no_grad()
    def embed_motions(self, features: np.ndarray | Tensor, lengths: np.ndarray | Tensor,
                      batch_size: int = 256) -> np.ndarray:
        """`encode_motion` in batches, as a float64 numpy array `[N, latent]` for the metrics."""
        out = [self.encode_motion(features[i:i + batch_size], lengths[i:i + batch_size]).cpu().double().numpy()
               for i in range(0, len(features), batch_size)]
        return np.concatenate(out) if out else np.zeros((0, self.arch["latent_dim"]))

    @torch.no_grad()
    def embed_texts(self, captions: list[str], batch_size: int = 256) -> np.ndarray:
        """`encode_text` in batches, as a float64 numpy array `[N, latent]`."""
        out = [self.encode_text(captions[i:i + batch_size]).cpu().double().numpy()
               for i in range(0, len(captions), batch_size)]
        return np.concatenate(out) if out else np.zeros((0, self.arch["latent_dim"]))


def hinge_loss(z_text: Tensor, z_motion: Tensor, same_caption: Tensor, margin: float) -> Tensor:
    """T2M's contrastive loss on Euclidean distances: mean d^2 over matched pairs plus mean
    max(0, margin - d)^2 over mismatched pairs (every off-diagonal pair not flagged in `same_caption [B, B]`)."""
    dist = torch.cdist(z_text, z_motion)
    eye = torch.eye(len(dist), dtype=torch.bool, device=dist.device)
    negatives = ~eye & ~same_caption
    pos = dist.diagonal().pow(2).mean()
    neg = F.relu(margin - dist[negatives]).pow(2).mean() if negatives.any() else dist.new_zeros(())
    return pos + neg


def random_windows(dataset: MotionDataset, idx: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray,
                                                                                               np.ndarray]:
    """T2M's training crops: length floored to a multiple of 4 (one unit less with probability 1/3, never
    below 4 frames) and a random window of it. Returns features `[B, T, D]` and lengths `[B]`."""
    lengths = np.asarray(dataset.lengths)[idx]
    crop = (lengths // UNIT) * UNIT
    crop = np.where((rng.random(len(idx)) < 1 / 3) & (crop > UNIT), crop - UNIT, crop)
    crop = np.maximum(crop, np.minimum(lengths, UNIT))
    out = np.zeros((len(idx), int(crop.max()), dataset.features.shape[-1]), dtype=np.float32)
    for row, (i, n, c) in enumerate(zip(idx, lengths, crop, strict=True)):
        start = int(rng.integers(0, n - c + 1))
        out[row, :c] = dataset.features[i, start:start + c]
    return out, crop


def validation_metrics(model: T2MEvaluator, dataset: MotionDataset, pool: int) -> dict[str, float]:
    """R-precision@1/2/3 and MM-Dist of real motions vs their first caption (dataset order, batches of `pool`)."""
    was_training = model.training
    model.eval()
    z_m = model.embed_motions(dataset.features, dataset.lengths)
    z_t = model.embed_texts([c[0] for c in dataset.captions])
    model.train(was_training)
    out = {"val/mm_dist": metrics.mm_dist(z_t, z_m)}
    if len(dataset) >= pool:
        out.update({f"val/R@{k + 1}": float(v) for k, v in enumerate(metrics.r_precision(z_t, z_m, pool))})
    return out


def fit_evaluator(train: MotionDataset, val: MotionDataset | None, ecfg: EvaluatorConfig,
                  log: MetricsWriter | None = None, progress: bool = True) -> tuple[T2MEvaluator, dict[str, float]]:
    """Train a T2MEvaluator on `train` (vocabulary and statistics from it only); returns it in eval mode."""
    torch.manual_seed(ecfg.seed)
    rng = np.random.default_rng(ecfg.seed)
    model = T2MEvaluator(train.mean, train.std, build_vocab(train.captions), ecfg.hidden_dim, ecfg.latent_dim)
    opt = torch.optim.AdamW(model.parameters(), lr=ecfg.lr, weight_decay=0.01)
    warmup = max(1, min(100, ecfg.steps // 10))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: warmup_cosine(s, ecfg.steps, warmup, overlap=True))
    batch = min(ecfg.batch_size, len(train))
    result: dict[str, float] = {}
    model.train()
    columns = (TextColumn("evaluator"), BarColumn(),
               TextColumn("{task.completed}/{task.total} loss {task.fields[loss]}"), TimeRemainingColumn())
    with Progress(*columns, disable=not progress) as bar:
        task = bar.add_task("train", total=ecfg.steps, loss="-")
        for step in range(1, ecfg.steps + 1):
            idx = rng.choice(len(train), batch, replace=False)
            captions = [train.captions[i][rng.integers(len(train.captions[i]))] for i in idx]
            key = [" ".join(words(c)) for c in captions]
            same = torch.as_tensor([[a == b for b in key] for a in key])
            x, n = random_windows(train, idx, rng)
            loss = hinge_loss(model.encode_text(captions), model.encode_motion(x, n), same, ecfg.margin)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            sched.step()
            result = {"loss/hinge": loss.item(), "lr": sched.get_last_lr()[0]}
            if val is not None and (step % ecfg.eval_every == 0 or step == ecfg.steps):
                result.update(validation_metrics(model, val, ecfg.r_precision_pool))
            if log is not None and (step % 50 == 0 or step == ecfg.steps or "val/mm_dist" in result):
                log.log(step, **result)
            bar.update(task, advance=1, loss=f"{loss.item():.3f}")
    return model.eval(), result


def train_evaluator(cfg: Config, out_path: str | Path | None = None, progress: bool = True) -> Path:
    """Train the evaluator on `cfg.data`'s train split; write `{workdir}/evaluator/evaluator.pt` (or
    `out_path`) and its metrics JSONL beside it. Returns the checkpoint path."""
    out = Path(out_path) if out_path is not None else Path(cfg.workdir) / "evaluator" / "evaluator.pt"
    return fit_and_save(cfg, out, KIND,
                        lambda train, val, log: fit_evaluator(train, val, cfg.evaluator, log, progress),
                        vocab=lambda model: model.vocab)


def load_evaluator(path: str | Path, data_id: str | None = None,
                   device: str | torch.device = "cpu") -> T2MEvaluator:
    """Load a trained evaluator (kind "evaluator", or the imported released T2M evaluator, kind "t2m_official",
    which has the same interface), in eval mode; `data_id` refuses one from another dataset."""
    from sopo_ray.evaluation.t2m_official import KIND as OFFICIAL_KIND
    from sopo_ray.evaluation.t2m_official import official_evaluator_from_payload

    payload = load_checkpoint(path, (KIND, OFFICIAL_KIND), data_id)
    if payload["kind"] == OFFICIAL_KIND:
        return official_evaluator_from_payload(payload).to(device)  # type: ignore[return-value]
    arch = payload["arch"]
    d = arch["feature_dim"]
    model = T2MEvaluator(np.zeros(d), np.ones(d), payload["vocab"], arch["hidden_dim"], arch["latent_dim"])
    try:
        model.load_state_dict(payload["state"])
    except RuntimeError as exc:
        raise CheckpointError(f"checkpoint {path} does not fit this evaluator ({str(exc).splitlines()[0][:100]}); "
                              "retrain it with `sopo evaluate --retrain-evaluator`") from None
    return model.eval().to(device)
