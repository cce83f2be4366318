"""`sopo experiment compare` end to end at smoke size: every method goes through the real trainer on the real
local Ray, is evaluated on the test split, and lands in results.json / results.md with finite numbers."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from sopo_ray.cli import main
from sopo_ray.config import load_config
from sopo_ray.experiment import base_config, run_config
from sopo_ray.experiment_cost import alignment_cost

CONFIG = Path(__file__).resolve().parents[1] / "configs" / "compare_smoke.yaml"
METHODS = ("sft", "offline_dpo", "online_dpo", "sopo")


def test_run_config_keeps_curve_checkpoints_and_skips_per_run_eval(tmp_path: Path) -> None:
    cfg = load_config(CONFIG, ["schedule.total_steps=40", "experiment.curve_points=4"])
    rcfg = run_config(base_config(cfg, "mld"), "online_dpo", tmp_path / "r")
    assert rcfg.model.kind == "mld" and rcfg.objective.name == "online_dpo"
    assert rcfg.schedule.checkpoint_interval == 10 and rcfg.schedule.checkpoints_to_keep == 5
    assert rcfg.schedule.final_eval is False and rcfg.output_dir == tmp_path / "r"


def test_alignment_cost_counts_rollout_only_for_online_methods() -> None:
    cfg = load_config(CONFIG, ["schedule.total_steps=10", "schedule.batch_size=4", "objective.k=3",
                               "diffusion.rollout_sample_steps=5", "diffusion.guidance_scale=2.5"])
    records = [{"event": "pipeline", "queue/generated": 7}, {"event": "pipeline", "queue/generated": 44}]
    sopo = alignment_cost(run_config(cfg, "sopo", Path("x")), records, 0)
    assert sopo["rollout_passes"] == 44 * 3 * 5 * 2 and sopo["learner_passes"] == 10 * 4 * 8
    sft = alignment_cost(run_config(cfg, "sft", Path("x")), [], 0)
    assert sft["rollout_passes"] == 0 and sft["sample_passes"] == 10 * 4 * 3


@pytest.mark.slow
def test_compare_smoke_gives_a_finite_row_per_method(ray_cluster, tmp_path: Path) -> None:
    torch.set_num_threads(1)
    out = tmp_path / "exp"
    assert main(["experiment", "compare", "--config", str(CONFIG), "--out", str(out), "--set",
                 f"workdir={tmp_path / 'work'}", "--set", "experiment.curve_points=1",
                 "--set", "schedule.total_steps=2"]) == 0
    results = json.loads((out / "results.json").read_text())
    entry = results["bases"]["mdm"]
    assert set(entry["methods"]) == set(METHODS)
    for table in [entry["base"], *(m["eval"] for m in entry["methods"].values())]:
        for key in ("R@1", "R@3", "FID", "MM-Dist", "Diversity", "Oracle", "Reward"):
            assert math.isfinite(table[key][0]) and math.isfinite(table[key][1]), key
    for method in METHODS:
        run = entry["methods"][method]["run"]
        assert run["steps"] == 2 and run["cost"]["sample_passes"] > 0
        assert (out / "mdm" / method / "policy.pt").is_file()
        assert [p["step"] for p in entry["methods"][method]["curve"]] == [0, 2]
    online = entry["methods"]["sopo"]["run"]["cost"]
    assert online["rollout_groups"] >= 2 * 4 and entry["methods"]["sft"]["run"]["cost"]["rollout_passes"] == 0
    text = (out / "results.md").read_text()
    assert "MDM + SoPo" in text and "MDM + online DPO" in text
    assert (out / "filmstrip_mdm.png").stat().st_size > 0 and (out / "oracle_vs_steps.png").is_file()
