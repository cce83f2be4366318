"""TMR-style reward model: padding never encoded, score range and meaning, negative filtering, training, checkpoints."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from sopo_ray.checkpoint import save_checkpoint
from sopo_ray.config import RewardConfig
from sopo_ray.errors import CheckpointError
from sopo_ray.reward import load_reward
from sopo_ray.reward.diagnostics import order_probe
from sopo_ray.reward.tmr import TextInputs, TMRReward, TokenTextHead
from sopo_ray.reward.training import contrastive_loss, feature_statistics, fit_reward, recall_at, retrieval_metrics

torch.set_num_threads(1)
TINY = RewardConfig(latent_dim=32, num_layers=1, num_heads=2, steps=60, batch_size=32, lr=2e-3, eval_every=60)


def real_motion(humanml3d_sample: Path) -> np.ndarray:
    return np.load(humanml3d_sample / "new_joint_vecs" / "012314.npy")


@pytest.fixture(scope="module")
def model(humanml3d_sample: Path) -> TMRReward:
    x = real_motion(humanml3d_sample)
    torch.manual_seed(0)
    return TMRReward(x.mean(0), x.std(0) + 1e-3, latent_dim=32, num_layers=1, num_heads=2).eval()


@pytest.mark.parametrize("frames_per_token", [1, 3])
def test_padding_frames_are_never_encoded(frames_per_token: int, humanml3d_sample: Path) -> None:
    x = real_motion(humanml3d_sample)
    torch.manual_seed(0)
    model = TMRReward(x.mean(0), x.std(0) + 1e-3, latent_dim=32, num_layers=1, num_heads=2,
                      frames_per_token=frames_per_token).eval()
    padded = np.zeros((2, 200, 263), np.float32)
    padded[:, :170] = x
    padded[1, 170:] = np.nan  # garbage past the length must not reach the embedding
    padded[1, 170:, :4] = 1e6
    with torch.no_grad():
        z = model.encode_motion(padded, [170, 170])
        alone = model.encode_motion(x[None], [170])
        short = model.encode_motion(padded, [101, 101])
        short_alone = model.encode_motion(x[None, :101], [101])
    assert torch.isfinite(z).all()
    torch.testing.assert_close(z[0], z[1])
    torch.testing.assert_close(z[:1], alone, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(short[:1], short_alone, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(short[0], z[0])  # the length matters


def test_score_is_cosine_mapped_to_unit_interval(model: TMRReward, humanml3d_sample: Path) -> None:
    x = real_motion(humanml3d_sample)[None].repeat(3, 0)
    captions = ["a person serves a tennis ball", "someone walks in a circle", "a man jumps twice"]
    scores = model.score(x, [170, 120, 60], captions)
    assert scores.shape == (3,) and torch.all((scores >= 0) & (scores <= 1))
    with torch.no_grad():
        cos = (model.encode_motion(x, [170, 120, 60]) * model.encode_text(captions)).sum(-1)
    torch.testing.assert_close(scores, (cos + 1) / 2)
    same = model.motion_similarity(x, [170, 120, 60], x, [170, 120, 60])
    torch.testing.assert_close(same, torch.ones(3), atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="lengths"):
        model.score(x, [171, 10, 10], captions)


def test_negative_filter_removes_near_duplicate_captions_from_the_loss() -> None:
    torch.manual_seed(0)
    z_t = torch.nn.functional.normalize(torch.randn(4, 8), dim=-1)
    z_m = torch.nn.functional.normalize(torch.randn(4, 8), dim=-1)
    distinct = torch.eye(4, dtype=torch.bool)     # no two captions share their text
    sent = torch.eye(4)
    sent[1] = sent[0]  # the sentence embeddings of captions 0 and 1 are identical: similarity 1
    filtered = contrastive_loss(z_t, z_m, distinct, 0.1, sent, negative_filter=0.8)
    unfiltered = contrastive_loss(z_t, z_m, distinct, 0.1, sent, negative_filter=1.0)
    logits = z_t @ z_m.T / 0.1
    target = torch.arange(4)
    ce = torch.nn.functional.cross_entropy
    torch.testing.assert_close(unfiltered, (ce(logits, target) + ce(logits.T, target)) / 2)
    logits[0, 1] = logits[1, 0] = float("-inf")
    by_hand = (ce(logits, target) + ce(logits.T, target)) / 2
    torch.testing.assert_close(filtered, by_hand)
    assert not torch.allclose(filtered, unfiltered)
    same_text = distinct.clone()
    same_text[0, 1] = same_text[1, 0] = True      # the same pair as equal caption text: not a negative either
    torch.testing.assert_close(contrastive_loss(z_t, z_m, same_text, 0.1), by_hand)
    all_same = torch.ones(4, 8)
    assert float(contrastive_loss(z_t, z_m, distinct, 0.1, all_same, 0.8)) == pytest.approx(0.0, abs=1e-6)


def test_feature_statistics_ignore_padding() -> None:
    x = np.zeros((2, 5, 3), np.float32)
    x[0, :2] = [[1, 2, 5], [3, 2, 5]]
    x[1, :1] = [[2, 2, 5]]
    x[1, 1:] = 99.0  # past the length
    mean, std = feature_statistics(x, np.array([2, 1]))
    np.testing.assert_allclose(mean, [2, 2, 5], atol=1e-6)
    np.testing.assert_allclose(std, [np.sqrt(2 / 3), 1.0, 1.0], atol=1e-6)  # constant dims get std 1


def test_recall_counts_ties_as_misses() -> None:
    sim = torch.tensor([[0.9, 0.1, 0.0], [0.5, 0.5, 0.0], [0.0, 0.8, 0.7]])
    assert recall_at(sim, (1, 2)) == {1: pytest.approx(1 / 3), 2: pytest.approx(1.0)}


def test_training_learns_retrieval_and_checkpoint_round_trips(separable_dataset, tmp_path: Path) -> None:
    train, val = separable_dataset
    model, metrics = fit_reward(train, val, TINY, progress=False)
    # chance: 1/32 and 5/32; each of the 16 caption kinds has ~2 motions per batch of 32, so R@1 tops out near 0.5
    assert metrics["retrieval/b32_R@1"] > 0.3 and metrics["retrieval/b32_R@5"] > 0.9
    # a motion whose caption is the query's paraphrase counts in `all_thr`: never below `all`
    assert metrics["retrieval/all_thr_R@1"] >= metrics["retrieval/all_R@1"]
    assert metrics["retrieval/all_thr_R@1"] > 0.8
    path = save_checkpoint(tmp_path / "reward.pt", "reward", model.state_dict(), {}, train.data_id, arch=model.arch)
    loaded = load_reward(path, train.data_id)
    captions = [c[0] for c in val.captions[:8]]
    torch.testing.assert_close(loaded.score(val.features[:8], val.lengths[:8], captions),
                               model.score(val.features[:8], val.lengths[:8], captions))
    assert retrieval_metrics(loaded, val) == pytest.approx({k: v for k, v in metrics.items()
                                                            if k.startswith("retrieval/")})
    with pytest.raises(CheckpointError, match="dataset"):
        load_reward(path, "another-dataset")
    with pytest.raises(CheckpointError, match="'evaluator'"):
        load_reward(save_checkpoint(tmp_path / "e.pt", "evaluator", {}, {}), None)


def test_token_text_head_ignores_padding_and_reads_order() -> None:
    torch.manual_seed(0)
    head = TokenTextHead(8, 16, num_layers=1, num_heads=2, dropout=0.0).eval()
    sentence, tokens = torch.randn(2, 8), torch.randn(2, 5, 8)
    lengths = torch.tensor([5, 3])
    out = head(sentence, tokens, lengths)
    padded = torch.cat([tokens, torch.full((2, 4, 8), float("nan"))], dim=1)
    padded[1, 3:5] = float("nan")       # garbage past each length never reaches the output
    torch.testing.assert_close(head(sentence, torch.nan_to_num(padded, nan=7.0), lengths), out)
    reversed_tokens = tokens.clone()
    reversed_tokens[0] = tokens[0].flip(0)
    assert not torch.allclose(head(sentence, reversed_tokens, lengths)[0], out[0], atol=1e-4)
    model = TMRReward(torch.zeros(263), torch.ones(263), latent_dim=16, num_layers=1, num_heads=2, text_layers=1)
    with pytest.raises(ValueError, match="reads token states: build its inputs with `text_inputs`"):
        model.encode_inputs(TextInputs(torch.randn(2, 384)))


def order_dataset(n: int, seed: int):
    """Motions of two actions one after the other, captioned "X then Y": every caption's words also occur in the
    caption of the reversed order, so only the word order tells the two apart."""
    from sopo_ray.data.dataset import MotionDataset

    actions = ["walks", "jumps", "waves", "kicks"]
    protos = np.random.default_rng(99).normal(size=(4, 263)).astype(np.float32)
    rng = np.random.default_rng(seed)
    features = np.zeros((n, 40, 263), np.float32)
    captions, orders = [], []
    for i in range(n):
        a, b = rng.choice(4, 2, replace=False)
        features[i, :20], features[i, 20:] = protos[a], protos[b]
        features[i] += 0.3 * rng.normal(size=(40, 263))
        captions.append([f"a person {actions[a]} then {actions[b]}"])
        orders.append(f"a person {actions[b]} then {actions[a]}")
    lengths = np.full(n, 40, np.int64)
    data = MotionDataset(motion_ids=[f"{seed}-{i}" for i in range(n)], features=features, lengths=lengths,
                         captions=captions, params=None, mean=features.reshape(-1, 263).mean(0),
                         std=features.reshape(-1, 263).std(0) + 1e-3, data_id="order-test", skeleton="t2m")
    return data, orders


def test_a_token_reward_learns_word_order_and_round_trips(tmp_path: Path) -> None:
    (train, _), (val, swapped) = order_dataset(256, 0), order_dataset(48, 1)
    rcfg = TINY.model_copy(update={"text_layers": 1, "steps": 300, "mirror": False,
                                   "counterfactual_negatives": False})
    model, _ = fit_reward(train, None, rcfg, progress=False)
    own = model.score(val.features, val.lengths, [c[0] for c in val.captions])
    assert float((own > model.score(val.features, val.lengths, swapped)).float().mean()) > 0.9
    probe = order_probe(model, val)        # its reorderings of "a person X then Y" are exactly "... Y then X"
    assert probe["motions"] == len(val) and probe["own_order"] > 0.9
    path = save_checkpoint(tmp_path / "reward.pt", "reward", model.state_dict(), {}, train.data_id, arch=model.arch)
    loaded = load_reward(path, train.data_id)
    assert loaded.arch["text_layers"] == 1
    torch.testing.assert_close(loaded.score(val.features, val.lengths, swapped),
                               model.score(val.features, val.lengths, swapped))
