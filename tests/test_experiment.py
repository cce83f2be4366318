"""`sopo experiment compare` end to end at smoke size: every method and training seed goes through the real trainer
on the real local Ray, is evaluated on both held-out splits, aggregated over its seeds and compared with SoPo;
and the verdict rule on hand-made intervals."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from sopo_ray.cli import main
from sopo_ray.config import load_config
from sopo_ray.experiments.cost import alignment_cost, pretrain_cost
from sopo_ray.experiments.runner import base_config, run_config
from sopo_ray.experiments.seeds import compare_cells, over_seeds, verdict

CONFIG = Path(__file__).resolve().parents[1] / "configs" / "compare_smoke.yaml"
METHODS = ("sft", "offline_dpo", "online_dpo", "sopo")


def test_run_config_keeps_curve_checkpoints_and_skips_per_run_eval(tmp_path: Path) -> None:
    cfg = load_config(CONFIG, ["schedule.total_steps=40", "experiment.curve_points=4"])
    rcfg = run_config(base_config(cfg, "mld"), "online_dpo", tmp_path / "r")
    assert rcfg.model.kind == "mld" and rcfg.objective.name == "online_dpo"
    assert rcfg.checkpoint.interval == 10 and rcfg.checkpoint.keep == 5
    assert rcfg.log.final_eval is False and rcfg.output_dir == tmp_path / "r"


def test_alignment_cost_counts_rollout_only_for_online_methods() -> None:
    cfg = load_config(CONFIG, ["schedule.total_steps=10", "schedule.batch_size=4", "objective.k=3",
                               "diffusion.rollout_sample_steps=5", "diffusion.guidance_scale=2.5"])
    records = [{"event": "pipeline", "queue/generated": 7}, {"event": "pipeline", "queue/generated": 44}]
    sopo = alignment_cost(run_config(cfg, "sopo", Path("x")), records, 0)
    assert sopo["rollout_passes"] == 44 * 3 * 5 * 2 and sopo["learner_passes"] == 10 * 4 * 8
    sft = alignment_cost(run_config(cfg, "sft", Path("x")), [], 0)
    assert sft["rollout_passes"] == 0 and sft["sample_passes"] == 10 * 4 * 3


def test_pretraining_is_costed_as_the_base_checkpoint_was_trained(tmp_path: Path) -> None:
    cfg = load_config(CONFIG, ["pretrain.steps=100", "pretrain.batch_size=8"])
    base = tmp_path / "base.pt"
    longer = {"pretrain_steps": 1600, "config": {"pretrain": {"batch_size": 32}}}
    assert pretrain_cost(cfg, base, longer)["steps"] == 1600                  # not the config's 100
    assert pretrain_cost(cfg, base, longer)["sample_passes"] == 3 * 32 * 1600
    imported = {"config": {"pretrain": {"batch_size": 32}}}                   # no record of its pretraining
    assert pretrain_cost(cfg, base, imported)["sample_passes"] == 3 * 8 * 100
    assert pretrain_cost(cfg, base)["steps"] == 100


def test_a_method_aggregates_over_its_seeds_with_a_t_interval() -> None:
    tables = [{"Oracle": [0.5, 0.01]}, {"Oracle": [0.6, 0.02]}, {"Oracle": [0.7, 0.01]}]
    mean, half = over_seeds(tables)["Oracle"]
    assert mean == pytest.approx(0.6)
    assert half == pytest.approx(4.302653 * 0.1 / 3 ** 0.5, rel=1e-5)       # t(0.975, 2) * sd / sqrt(3)
    assert over_seeds(tables[:1]) == {"Oracle": [0.5, 0.01]}                  # one seed keeps its evaluation CI


@pytest.mark.parametrize(("metric", "a", "b", "expected"), [
    ("Oracle", [0.60, 0.02], [0.50, 0.03], "better"),
    ("Oracle", [0.52, 0.02], [0.50, 0.03], "tie"),
    ("R@1", [0.10, 0.01], [0.20, 0.01], "worse"),
    ("FID", [5.0, 0.5], [8.0, 1.0], "better"),                               # lower is better
    ("MM-Dist", [9.0, 0.1], [8.0, 0.1], "worse"),
    ("Diversity", [12.4, 0.1], [14.0, 0.2], "better"),                       # closer to the real 12.5
    ("Diversity", [12.4, 0.3], [12.6, 0.3], "tie"),
])
def test_the_verdict_needs_disjoint_intervals_in_the_metric_s_direction(metric, a, b, expected) -> None:
    assert compare_cells(metric, a, b, real=[12.5, 0.1]) == expected


def test_verdict_covers_the_metrics_both_rows_have() -> None:
    marks = verdict({"Oracle": [0.6, 0.01], "FID": [5.0, 0.1]}, {"Oracle": [0.5, 0.01]})
    assert marks == {"Oracle": "better"}


@pytest.mark.slow
def test_compare_smoke_gives_a_finite_row_per_method_and_seed(ray_cluster, tmp_path: Path) -> None:
    torch.set_num_threads(1)
    out = tmp_path / "exp"
    assert main(["experiment", "compare", "--config", str(CONFIG), "--out", str(out), "--set",
                 f"workdir={tmp_path / 'work'}", "--set", "experiment.curve_points=1",
                 "--set", "schedule.total_steps=2", "--set", "experiment.seeds=[0,1]"]) == 0
    results = json.loads((out / "results.json").read_text())
    entry = results["bases"]["mdm"]
    assert list(entry["splits"]) == ["test", "compositional"]
    for split in entry["splits"].values():
        assert set(split["methods"]) == set(METHODS)
        for table in [split["base"], *(m["mean"] for m in split["methods"].values()),
                      *(t for m in split["methods"].values() for t in m["seeds"].values())]:
            for key in ("R@1", "R@3", "FID", "MM-Dist", "Diversity", "Oracle", "Reward", "Oracle-all"):
                assert math.isfinite(table[key][0]) and math.isfinite(table[key][1]), key
            assert 0.0 <= table["Oracle-all"][0] <= 1.0                  # every motion of the split, one each
        assert set(split["verdict"]) == {"base", "sft", "offline_dpo", "online_dpo"}
        assert set(split["verdict"]["base"].values()) <= {"better", "worse", "tie"}
    for method in METHODS:
        for seed in (0, 1):
            run = entry["runs"][f"{method}/seed-{seed}"]
            assert run["steps"] == 2 and run["seed"] == seed and run["cost"]["sample_passes"] > 0
            assert (out / "mdm" / method / f"seed-{seed}" / "policy.pt").is_file()
        assert [p["step"] for p in entry["curves"][method]] == [0, 2]
    online = entry["runs"]["sopo/seed-0"]["cost"]
    assert online["rollout_groups"] == 2 * 4 and entry["runs"]["sft/seed-0"]["cost"]["rollout_passes"] == 0
    text = (out / "results.md").read_text()
    assert "MDM + SoPo" in text and "MDM + online DPO" in text and "SoPo against" in text
    assert "Oracle, all motions" in text and "Δ from the base, over seeds" in text
    test = entry["splits"]["test"]
    for method, row in test["methods"].items():                  # each seed minus the base, then over the seeds
        seeds = [t["Oracle-all"][0] - test["base"]["Oracle-all"][0] for t in row["seeds"].values()]
        assert row["vs_base"]["Oracle-all"][0] == pytest.approx(sum(seeds) / len(seeds)), method
    sft = test["methods"]["sft"]["seeds"]                        # SoPo minus each method, seed by seed
    pairs = [t["Oracle"][0] - sft[seed]["Oracle"][0] for seed, t in test["methods"]["sopo"]["seeds"].items()]
    assert test["sopo_minus"]["sft"]["Oracle"][0] == pytest.approx(sum(pairs) / len(pairs))
    assert set(test["sopo_minus"]) == {"sft", "offline_dpo", "online_dpo"} and "SoPo − method, same seed" in text
    assert (out / "mdm" / "sopo" / "seed-0" / "oracle_all_compositional.json").is_file()   # cached per split
    assert text.index("in-distribution test split") < text.index("compositional split")
    assert (out / "filmstrip_mdm.png").stat().st_size > 0 and (out / "oracle_vs_steps.png").is_file()


def test_delta_over_seeds_subtracts_the_base_then_takes_the_seed_interval():
    from sopo_ray.experiments.seeds import delta_over_seeds

    base = {"Oracle": [0.5, 0.03], "FID": [4.0, 1.0]}
    seeds = [{"Oracle": [0.52, 0.01], "FID": [3.0, 0.5]}, {"Oracle": [0.54, 0.01], "FID": [3.5, 0.5]},
             {"Oracle": [0.53, 0.02], "FID": [2.5, 0.5]}]
    d = delta_over_seeds(seeds, base)
    assert d["Oracle"][0] == pytest.approx(0.03) and d["FID"][0] == pytest.approx(-1.0)
    assert d["Oracle"][1] == pytest.approx(over_seeds(seeds)["Oracle"][1])     # the base's own CI is not counted


def test_paired_delta_over_seeds_cancels_what_a_seed_shares():
    from sopo_ray.experiments.seeds import paired_delta_over_seeds

    # two methods whose seeds swing together by +-0.05: each row's own interval is wide, the paired one is not
    a = [{"Oracle": [0.60 + s, 0.01]} for s in (-0.05, 0.0, 0.05)]
    b = [{"Oracle": [0.58 + s, 0.01]} for s in (-0.05, 0.0, 0.05)]
    d = paired_delta_over_seeds(a, b)
    assert d["Oracle"][0] == pytest.approx(0.02) and d["Oracle"][1] == pytest.approx(0.0, abs=1e-12)
    assert over_seeds(a)["Oracle"][1] > 0.1
    with pytest.raises(ValueError, match="same number of seeds"):
        paired_delta_over_seeds(a, b[:2])
    with pytest.raises(ValueError, match=">= 2"):
        paired_delta_over_seeds(a[:1], b[:1])
