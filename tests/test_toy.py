"""The 2-D toy: its world and metrics, the `sopo toy` command, and the paper's claim averaged over seeds."""

from __future__ import annotations

import json

import pytest
import torch
from PIL import Image

from sopo_ray.cli import main
from sopo_ray.toy.align import evaluate, run_toy, summarize
from sopo_ray.toy.world import METHODS, MODES, ToySettings, true_preference

torch.set_num_threads(1)

TINY = dict(steps=4, pretrain_steps=20, reward_steps=10, eval_samples=64, curve_every=2)


def test_true_preference_peaks_at_the_modes_and_vanishes_far_away():
    values = true_preference(torch.cat([MODES, torch.tensor([[-5.0, -5.0], [5.0, 5.0]])]))
    assert values[:2].tolist() == pytest.approx([1.0, 1.0], abs=1e-6)
    assert (values[2:] < 1e-3).all()


def test_evaluate_counts_modes_and_spread():
    on_a = MODES[0].repeat(100, 1)
    reward = lambda x: true_preference(x)  # noqa: E731
    one = evaluate(on_a, reward)
    assert one["mode_mass"] == [1.0, 0.0] and one["modes_covered"] == 1
    assert one["spread"] == pytest.approx(0.0) and one["mean_true_preference"] == pytest.approx(1.0)
    both = evaluate(torch.cat([on_a, MODES[1].repeat(100, 1)]), reward)
    assert both["modes_covered"] == 2 and both["frac_low_preference"] == 0.0
    nowhere = evaluate(torch.full((10, 2), 5.0), reward)
    assert nowhere["modes_covered"] == 0 and nowhere["frac_low_preference"] == 1.0


def test_run_toy_is_deterministic_in_the_seed():
    a, b = run_toy(ToySettings(seed=3, **TINY)), run_toy(ToySettings(seed=3, **TINY))
    for key in ("reference", *METHODS):
        assert torch.equal(a.samples[key], b.samples[key])
    assert [row["step"] for row in a.metrics["sopo"]["curve"]] == [2, 4]
    c = run_toy(ToySettings(seed=4, **TINY))
    assert not torch.equal(a.samples["sopo"], c.samples["sopo"])


def test_cli_writes_figure_and_json(tmp_path, capsys):
    assert main(["toy", "--out", str(tmp_path), "--steps", "3", "--reward", "exact"]) == 0
    summary = json.loads((tmp_path / "toy.json").read_text())
    assert summary["seeds"] == [0] and summary["settings"]["reward"] == "exact"
    assert set(summary["mean"]) == {"reference", *METHODS}
    assert 0.0 <= summary["mean"]["sopo"]["mean_true_preference"] <= 1.0
    with Image.open(tmp_path / "toy.png") as png:
        assert png.size[0] > 1000 and png.size[1] > 300
    assert "sopo" in capsys.readouterr().out


def test_cli_rejects_bad_arguments(tmp_path, capsys):
    assert main(["toy", "--out", str(tmp_path), "--repeats", "0"]) == 2
    assert "error: --repeats must be >= 1" in capsys.readouterr().err
    assert main(["toy", "--out", str(tmp_path), "--steps", "-1"]) == 2
    assert "error: bad toy setting: steps must be >= 1" in capsys.readouterr().err


@pytest.mark.slow
def test_sopo_beats_offline_and_online_dpo_over_seeds():
    """The paper's Fig. 3 claim on default settings, averaged over seeds 0-2 (each ~7 s alone on one core).

    Measured means over seeds 0, 1, 2 (docs/method.md has seeds 0-7): mean true preference SoPo 0.340, online DPO
    0.198 (0.421 / 0.085 / 0.087: seed 0 collapses on mode B's edge, the others into the valley where the learned
    reward peaks), offline DPO 0.000, reference 0.284; spread SoPo 1.44 vs online 0.34; SoPo covers both modes
    in all three. Assertions keep about half of each measured margin.
    """
    results = [run_toy(ToySettings(seed=seed)) for seed in (0, 1, 2)]
    mean = summarize(results)["mean"]
    sopo, online, offline, ref = mean["sopo"], mean["online_dpo"], mean["offline_dpo"], mean["reference"]
    # higher mean true preference than both baselines and than the reference
    assert sopo["mean_true_preference"] > online["mean_true_preference"] + 0.07
    assert sopo["mean_true_preference"] > offline["mean_true_preference"] + 0.15
    assert sopo["mean_true_preference"] > ref["mean_true_preference"] + 0.02
    # no collapse: SoPo keeps its spread and covers both modes, online DPO shrinks onto one spot
    assert sopo["modes_covered"] >= 5 / 3 and online["modes_covered"] <= 1
    assert online["spread"] < 0.5 * sopo["spread"]
    assert sopo["spread"] >= 0.9 * ref["spread"]
    # no overfitting: offline DPO fits its fixed pairs perfectly while its samples leave the preference
    assert all(r.metrics["offline_dpo"]["curve"][-1]["accuracy"] >= 0.95 for r in results)
    assert offline["frac_low_preference"] > 0.5
    assert sopo["frac_low_preference"] < 0.6 * ref["frac_low_preference"]


def test_cli_defaults_match_toy_settings():
    from sopo_ray.commands.toy import DEFAULT_STEPS
    from sopo_ray.toy.world import ToySettings

    assert ToySettings().steps == DEFAULT_STEPS
