"""The independent T2M-style evaluator: BiGRU equivalence, padding, tokens, loss, training, checkpoints."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch.nn.utils.rnn import pack_padded_sequence

from sopo_ray.checkpoint import save_checkpoint
from sopo_ray.config import EvaluatorConfig
from sopo_ray.errors import CheckpointError
from sopo_ray.evaluation.evaluator import (
    T2MEvaluator,
    _BiGRUHead,
    build_vocab,
    fit_evaluator,
    hinge_loss,
    load_evaluator,
    random_windows,
    words,
)

torch.set_num_threads(1)
TINY = EvaluatorConfig(latent_dim=16, hidden_dim=32, steps=150, batch_size=32, lr=3e-3, margin=3.0, eval_every=150)


def test_bigru_head_equals_a_packed_bidirectional_gru() -> None:
    torch.manual_seed(0)
    head = _BiGRUHead(8, 4)
    ref = torch.nn.GRU(8, 8, batch_first=True, bidirectional=True)
    with torch.no_grad():
        for name in ("weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0"):
            getattr(ref, name).copy_(getattr(head.forward_gru, name))
            getattr(ref, name + "_reverse").copy_(getattr(head.backward_gru, name))
        head.h0.normal_()
    x = torch.randn(3, 7, 8)
    lengths = torch.tensor([7, 2, 5])
    _, last = ref(pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False), head.h0.expand(-1, 3, -1))
    expected = head.out(torch.cat([last[0], last[1]], dim=-1))
    torch.testing.assert_close(head(x, lengths), expected, atol=1e-5, rtol=1e-5)


def test_motion_embedding_ignores_padding_and_batch_length(humanml3d_sample: Path) -> None:
    x = np.load(humanml3d_sample / "new_joint_vecs" / "012314.npy")
    torch.manual_seed(0)
    model = T2MEvaluator(x.mean(0), x.std(0) + 1e-3, build_vocab([["a man"]]), 16, 8).eval()
    padded = np.full((2, 190, 263), np.nan, np.float32)
    padded[:, :170] = x
    with torch.no_grad():
        z = model.encode_motion(padded, [170, 120])
        alone = model.encode_motion(x[None, :120], [120])
    assert torch.isfinite(z).all()
    torch.testing.assert_close(z[1:], alone, atol=1e-5, rtol=1e-5)
    emb = model.embed_motions(padded, np.array([170, 120]), batch_size=1)
    np.testing.assert_allclose(emb, z.double().numpy(), atol=1e-5)


def test_vocabulary_and_tokens() -> None:
    vocab = build_vocab([["A person walks.", "a person runs"], ["someone walks"]])
    assert vocab[:4] == ["<pad>", "<unk>", "<sos>", "<eos>"]
    assert vocab[4:] == ["a", "person", "walks", "runs", "someone"]  # by count, then alphabetically
    model = T2MEvaluator(np.zeros(263), np.ones(263), vocab, 8, 4)
    ids, lengths = model.tokenize(["a person flies", "walks"])
    assert ids.tolist() == [[2, 4, 5, 1, 3], [2, 6, 3, 0, 0]]
    assert lengths.tolist() == [5, 3]
    assert len(words(" ".join(["w"] * 30))) == 20


def test_hinge_loss_by_hand() -> None:
    z_t = torch.tensor([[0.0, 0.0], [3.0, 4.0]])
    z_m = torch.tensor([[0.0, 1.0], [3.0, 4.0]])
    # positives: d = 1, 0 -> mean d^2 = 0.5; negatives: d(t0, m1) = 5, d(t1, m0) = sqrt(9 + 9) -> relu(6 - d)^2
    neg = ((6 - 5.0) ** 2 + max(0.0, 6 - np.sqrt(18)) ** 2) / 2
    none_same = torch.zeros(2, 2, dtype=torch.bool)
    assert float(hinge_loss(z_t, z_m, none_same, 6.0)) == pytest.approx(0.5 + neg, rel=1e-5)
    assert float(hinge_loss(z_t, z_m, ~none_same, 6.0)) == pytest.approx(0.5)  # identical captions: no negatives


def test_random_windows_are_multiples_of_four_inside_the_motion(separable_dataset) -> None:
    train, _ = separable_dataset
    idx = np.arange(16)
    x, n = random_windows(train, idx, np.random.default_rng(0))
    assert np.all(n % 4 == 0) and np.all(n <= train.lengths[idx]) and np.all(n >= train.lengths[idx] - 7)
    for row, i in enumerate(idx):  # each crop is a contiguous window of the motion
        window = x[row, : n[row]]
        starts = [s for s in range(train.lengths[i] - n[row] + 1)
                  if np.array_equal(train.features[i, s:s + n[row]], window)]
        assert starts


def test_training_learns_and_checkpoint_round_trips(separable_dataset, tmp_path: Path) -> None:
    train, val = separable_dataset
    model, metrics = fit_evaluator(train, val, TINY, progress=False)
    assert metrics["val/R@3"] > 0.5  # chance: 3/32
    path = save_checkpoint(tmp_path / "ev.pt", "evaluator", model.state_dict(), {}, train.data_id, arch=model.arch,
                           vocab=model.vocab)
    loaded = load_evaluator(path, train.data_id)
    np.testing.assert_allclose(loaded.embed_texts(["a person walks forward"]),
                               model.embed_texts(["a person walks forward"]))
    np.testing.assert_allclose(loaded.embed_motions(val.features[:4], val.lengths[:4]),
                               model.embed_motions(val.features[:4], val.lengths[:4]))
    with pytest.raises(CheckpointError, match="dataset"):
        load_evaluator(path, "another-dataset")
