"""The reward's ranking of a policy's own samples (`sopo reward check`), the hard negatives it trains with, and
the oracle control (`reward.kind: oracle`)."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from sopo_ray.data import load_dataset
from sopo_ray.reward.diagnostics import (
    GroupScores,
    agreement_by_actions,
    clause_agreement,
    clause_variation,
    count_probe,
    pairwise_agreement,
    ranking_figures,
)
from sopo_ray.reward.hard_negatives import COUNT_WORDS, counterfactuals
from sopo_ray.reward.oracle import OracleReward, rollout_reward
from sopo_ray.reward.tmr import TMRReward
from sopo_ray.reward.training import TrainingPairs, contrastive_loss

REPO = Path(__file__).resolve().parents[1]


def test_pairwise_agreement_counts_only_pairs_the_oracle_tells_apart():
    oracle = np.array([[1.0, 0.5, 0.5], [0.2, 0.2, 0.2]])
    rewards = np.array([[0.9, 0.1, 0.3], [0.5, 0.1, 0.9]])
    agree, pairs = pairwise_agreement(rewards, oracle)
    # group 0: pairs (0,1) and (0,2) are informative, both ordered as the oracle; (1,2) is an oracle tie
    assert agree.tolist() == [2.0, 0.0] and pairs.tolist() == [2.0, 0.0]
    agree, pairs = pairwise_agreement(np.array([[0.4, 0.4, 0.9]]), np.array([[1.0, 0.0, 0.5]]))
    assert agree.tolist() == [0.5 + 0.0 + 1.0] and pairs.tolist() == [3.0]   # a reward tie counts 1/2


def test_clause_agreement_judges_only_pairs_that_differ_in_one_clause():
    def sample(count: bool, hand: bool) -> dict[str, bool]:
        return {"0:clap.count": count, "1:wave.hand_up": hand}

    group = [sample(True, True), sample(False, True), sample(False, False), sample(True, False)]
    # pairs differing in one clause: (0,1) and (2,3) in the count, (0,3) and (1,2) in the hand; (0,2), (1,3): both
    rewards = np.array([[0.9, 0.1, 0.5, 0.5]])
    figures = clause_agreement(rewards, [group])
    assert figures["clap.count"] == [0.75, 2.0]      # (0,1) agrees; (2,3) is a reward tie: 1/2
    assert figures["wave.hand_up"] == [0.5, 2.0]     # (0,3) agrees, (1,2) does not
    assert clause_agreement(-rewards, [group])["clap.count"] == [0.25, 2.0]
    other = [sample(True, True), {"0:clap.count": False}]            # different clause sets are never compared
    assert clause_agreement(np.array([[1.0, 0.0]]), [other]) == {}


def test_clause_variation_counts_disagreeing_cells_and_failures_every_sample_shares():
    def sample(count: bool, hand: bool) -> dict[str, bool]:
        return {"0:clap.count": count, "1:wave.hand_up": hand}

    # caption A: the count fails in all three samples, the hand varies (2 of 3); caption B: both pass everywhere
    a = [sample(False, True), sample(False, False), sample(False, True)]
    b = [sample(True, True)] * 3
    figures = clause_variation([a, b])
    assert figures["cells"] == 4 and figures["varying"] == 0.25
    assert figures["shared_failures"] == 3 / 4          # 4 failed checks, 3 of them in the cell all samples fail
    assert figures["kinds"]["clap.count"] == [0.5, 0.0, 2.0]
    assert figures["kinds"]["wave.hand_up"] == [5 / 6, 0.5, 2.0]
    lone = [sample(True, True), {"0:clap.count": False}]  # a clause not judged on every sample is no cell
    assert clause_variation([lone])["kinds"] == {"clap.count": [0.5, 1.0, 1.0]}
    assert np.isnan(clause_variation([b])["shared_failures"])   # nothing failed


def test_ranking_figures_of_a_perfect_and_of_an_inverted_ranker():
    rng = np.random.default_rng(0)
    oracle = rng.uniform(size=(50, 4))
    perfect = ranking_figures(GroupScores(oracle * 0.5 + 0.2, oracle, np.full(50, 0.9)), tau=0.3)
    assert perfect["agreement"][0] == 1.0 and perfect["single_clause"] == {}   # no clauses kept: none judged
    assert perfect["oracle_reward_best"][0] == pytest.approx(perfect["oracle_best"][0])
    assert perfect["best_of_k_gain"][0] > 0 and perfect["real_over_sample"] == 1.0
    assert perfect["gate_rate"] == pytest.approx(float((oracle.min(1) * 0.5 + 0.2 < 0.3).mean()))
    inverted = ranking_figures(GroupScores(-oracle, oracle, np.full(50, -2.0)), tau=0.3)
    assert inverted["agreement"][0] == 0.0 and inverted["best_of_k_gain"][0] < 0
    taus = perfect["tau_for_gate"]
    assert taus["0.1"] < taus["0.3"] < taus["0.5"]
    at_30 = ranking_figures(GroupScores(oracle * 0.5 + 0.2, oracle, np.full(50, 0.9)), tau=taus["0.3"] + 1e-9)
    assert at_30["gate_rate"] == pytest.approx(0.3, abs=0.03)


def test_agreement_by_actions_ranks_simple_captions_apart_from_sequences():
    rng = np.random.default_rng(1)
    oracle = rng.uniform(size=(40, 4))
    actions = np.array([1] * 20 + [2] * 20)
    rewards = np.where(actions[:, None] == 1, oracle, -oracle)      # right on single actions, inverted on sequences
    agree, pairs = pairwise_agreement(rewards, oracle)
    by = agreement_by_actions(agree, pairs, actions)
    assert list(by) == ["1", "2"] and by["1"][0] == 1.0 and by["2"][0] == 0.0 and by["1"][2] == by["2"][2] == 20
    figures = ranking_figures(GroupScores(rewards, oracle, np.full(40, 0.9), actions=actions), tau=0.3)
    assert figures["by_actions"] == by and figures["agreement"][0] == pytest.approx(0.5, abs=0.05)
    assert agreement_by_actions(np.zeros(3), np.zeros(3), np.array([1, 1, 3])) == {}   # no pair: left out


class _CountingReward:
    """Reads the count from the motion (a marker its test writes into frame 0) or, like a shortcut, from its
    length; scores 1 for the caption naming that count, 0 otherwise."""

    def __init__(self, by_length: bool) -> None:
        self.by_length = by_length

    def score(self, features, lengths, captions):
        counts = [min(int(n) // 20, 3) if self.by_length else int(round(f[0, 4]))
                  for f, n in zip(features, lengths, strict=True)]
        return torch.tensor([float(COUNT_WORDS[k] in c) for k, c in zip(counts, captions, strict=True)])


def test_count_probe_tells_a_reward_that_counts_from_one_that_reads_the_length(tiny_dataset):
    data = load_dataset(tiny_dataset, "train")
    counts = np.minimum(data.lengths // 20, 3)     # clips of 40-80 frames: count index 2 or 3, read from the length
    features = data.features.copy()
    features[:, 0, 4] = counts
    captions = [[f"a person jumps {COUNT_WORDS[k]}", caps[0]] for k, caps in zip(counts, data.captions, strict=True)]
    captions[0] = ["a person jumps once and then twice"]               # two counts: not asked
    captions[1] = ["a person walks forward"]                           # none: not asked
    probe_set = dataclasses.replace(data, features=features, captions=captions)
    honest = count_probe(_CountingReward(by_length=False), probe_set)
    shortcut = count_probe(_CountingReward(by_length=True), probe_set)
    assert honest["motions"] == shortcut["motions"] == len(data) - 2
    assert honest["as_is"] == honest["padded"] == 1.0 and shortcut["as_is"] == 1.0
    assert shortcut["padded"] == pytest.approx(np.mean(counts[2:] == 3)) and shortcut["padded"] < 1.0


def test_contrastive_loss_never_uses_the_same_caption_as_a_negative_and_counts_hard_negatives():
    torch.manual_seed(0)
    z_t = torch.nn.functional.normalize(torch.randn(4, 8), dim=-1)
    z_m = torch.nn.functional.normalize(torch.randn(4, 8), dim=-1)
    none = torch.zeros(4, 4, dtype=torch.bool)
    same = none.clone()
    same[0, 1] = same[1, 0] = True
    z_m_same = z_m.clone()
    z_m_same[1] = z_t[0]                        # motion 1 matches caption 0 perfectly: with the same text, fine
    assert contrastive_loss(z_t, z_m_same, same, 0.1) < contrastive_loss(z_t, z_m_same, none, 0.1)
    base = contrastive_loss(z_t, z_m, none, 0.1)
    hard = contrastive_loss(z_t, z_m, none, 0.1, z_hard=z_m.clone(), hard_valid=torch.ones(4, dtype=torch.bool))
    off = contrastive_loss(z_t, z_m, none, 0.1, z_hard=z_m.clone(), hard_valid=torch.zeros(4, dtype=torch.bool))
    assert hard > base and off == pytest.approx(base.item())
    broken = contrastive_loss(z_t, z_m, none, 0.1, z_broken=z_t.clone())   # a corrupted motion that matches
    assert broken > base


def test_training_pairs_put_each_motion_beside_its_mirror(tiny_dataset):
    from sopo_ray.config import RewardConfig
    from sopo_ray.motion.mirror import mirror_caption, mirror_features

    train = load_dataset(tiny_dataset, "train")
    pairs = TrainingPairs(train, RewardConfig(), TMRReward(train.mean, train.std, latent_dim=16, num_heads=2))
    features, lengths, ids, hard = pairs.batch(np.random.default_rng(0), 8)
    half = len(ids) // 2
    assert len(ids) == 8 and hard is not None and hard.shape == (8,)
    np.testing.assert_allclose(features[half:], mirror_features(features[:half]), atol=1e-6)
    np.testing.assert_array_equal(lengths[:half], lengths[half:])
    for a, b, h in zip(ids[:half].tolist(), ids[half:].tolist(), hard[:half].tolist(), strict=True):
        assert pairs.texts[b] == mirror_caption(pairs.texts[a])
        assert h == -1 or pairs.texts[h] in counterfactuals(pairs.texts[a])


def test_the_oracle_reward_scores_each_caption_against_its_own_motion(tiny_dataset):
    train = load_dataset(tiny_dataset, "train")
    learned = TMRReward(train.mean, train.std, latent_dim=16, num_layers=1, num_heads=2).eval()
    oracle = OracleReward(train.params, learned)
    idx = np.arange(min(6, len(train)))
    own = oracle.score(train.features[idx], train.lengths[idx], [c[0] for c in np.array(train.captions)[idx]],
                       motion_index=idx)
    assert torch.allclose(own, torch.ones(len(idx)))
    shuffled = oracle.score(train.features[idx], train.lengths[idx], ["x"] * len(idx), motion_index=idx[::-1])
    assert shuffled.mean() < 1.0
    with pytest.raises(ValueError, match="motion_index"):
        oracle.score(train.features[idx], train.lengths[idx], ["x"] * len(idx))
    sims = oracle.motion_similarity(train.features[idx], train.lengths[idx], train.features[idx],
                                    train.lengths[idx])
    assert torch.allclose(sims, torch.ones(len(idx)), atol=1e-5)


def test_reward_kind_picks_the_ranker(smoke_workdir):
    from sopo_ray.checkpoint import load_checkpoint
    from sopo_ray.config import DataConfig

    payload = load_checkpoint(smoke_workdir / "reward" / "reward.pt", "reward")
    train = load_dataset(DataConfig(root=smoke_workdir / "data", size=96, min_frames=16, max_frames=40,
                                    captions_per_motion=2), "train")
    assert isinstance(rollout_reward("tmr", payload, train), TMRReward)
    assert isinstance(rollout_reward("oracle", payload, train), OracleReward)


def test_reward_check_cli_writes_every_split(smoke_workdir, tmp_path):
    out = tmp_path / "check.json"
    proc = subprocess.run(
        [sys.executable, "-m", "sopo_ray.cli", "reward", "check", "--config", "configs/smoke.yaml",
         "--set", f"workdir={smoke_workdir}", "--set", f"data.root={smoke_workdir}/data", "--captions", "6",
         "--k", "3", "--splits", "train", "test", "--out", str(out)],
        capture_output=True, text=True, timeout=300, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = json.loads(out.read_text())
    assert set(report["splits"]) == {"train", "test"} and report["k"] == 3
    for figures in report["splits"].values():
        assert figures["groups"] == 6 and 0.0 <= figures["gate_rate"] <= 1.0
        assert 0.0 <= figures["oracle_reward_best"][0] <= figures["oracle_best"][0] <= 1.0
        for agreement, pairs in figures["single_clause"].values():
            assert 0.0 <= agreement <= 1.0 and pairs >= 1
        probe = figures["count_probe"]
        assert probe["motions"] >= 0 and all(np.isnan(probe[k]) or 0.0 <= probe[k] <= 1.0 for k in ("as_is", "padded"))
    assert "the reward picks the caption's own count" in proc.stdout
    for figures in report["splits"].values():
        order = figures["order_probe"]
        assert order["motions"] >= 0 and (np.isnan(order["own_order"]) or 0.0 <= order["own_order"] <= 1.0)
    assert " ".join(proc.stdout.split()).count("prefers the caption's own order to every swap") == 2
    assert " ".join(proc.stdout.split()).count("agreement by the number of actions in the caption") == 2
    for figures in report["splits"].values():
        assert sum(groups for _, _, groups in figures["by_actions"].values()) <= figures["groups"]
        assert all(0.0 <= a <= 1.0 for a, _, _ in figures["by_actions"].values())
    assert " ".join(proc.stdout.split()).count("of their failed clauses fail in every sample") == 2
    for figures in report["splits"].values():
        variation = figures["clause_variation"]
        assert variation["cells"] >= 6 and 0.0 <= variation["varying"] <= 1.0
        assert all(0.0 <= a <= 1.0 and 0.0 <= vary <= 1.0 and n >= 1 for a, vary, n in variation["kinds"].values())
    gated = subprocess.run(                                       # tau_gate: the gate is at the run's own tau
        [sys.executable, "-m", "sopo_ray.cli", "reward", "check", "--config", "configs/smoke.yaml",
         "--set", f"workdir={smoke_workdir}", "--set", f"data.root={smoke_workdir}/data", "--captions", "6",
         "--set", "objective.tau_gate=0.5", "--set", "objective.tau=0.0", "--splits", "train", "--out", str(out)],
        capture_output=True, text=True, timeout=300, cwd=REPO)
    assert gated.returncode == 0, gated.stderr[-2000:]
    calibrated = json.loads(out.read_text())
    assert 0.0 < calibrated["tau"] < 1.0 and calibrated["splits"]["train"]["gate_rate"] > 0.0   # tau 0 gates none
    bad = subprocess.run([sys.executable, "-m", "sopo_ray.cli", "reward", "check", "--config", "configs/smoke.yaml",
                          "--set", f"workdir={smoke_workdir}", "--set", f"data.root={smoke_workdir}/data", "--k", "1"],
                         capture_output=True, text=True, timeout=120,
                         cwd=REPO)
    assert bad.returncode == 2 and bad.stderr.startswith("error:") and "--k" in bad.stderr
