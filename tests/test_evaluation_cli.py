"""`sopo evaluate` and `sopo reward score` through the real CLI on the smoke artifacts."""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from sopo_ray.cli import main
from sopo_ray.commands.evaluate import resolve_config
from sopo_ray.config import config_to_dict, load_config
from sopo_ray.evaluation.metrics import paired_difference_by_actions
from sopo_ray.evaluation.protocol import COLUMNS

SMOKE = Path(__file__).resolve().parents[1] / "configs" / "smoke.yaml"


def smoke_args(workdir: Path) -> list[str]:
    return ["--config", str(SMOKE), "--set", f"workdir={workdir}", "--set", f"data.root={workdir}/data"]


def test_evaluate_prints_the_table_and_writes_json(smoke_workdir: Path, tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    base = next((smoke_workdir / "base").rglob("base.pt"))
    out = tmp_path / "eval.json"
    assert main(["evaluate", *smoke_args(smoke_workdir), "--checkpoint", str(base), "--out", str(out),
                 "--set", "evaluator.replications=2", "--set", "evaluator.mm_captions=2",
                 "--set", "evaluator.mm_generations=3", "--set", "evaluator.mm_pairs=2"]) == 0
    printed = capsys.readouterr().out
    assert "R@1" in printed and "FID" in printed and "Real" in printed
    report = json.loads(out.read_text())
    assert report["columns"] == list(COLUMNS) and report["replications"] == 2
    assert list(report["splits"]) == ["test", "compositional"]           # in-distribution first, then the harder
    assert printed.index("test split") < printed.index("compositional split")
    rows = report["splits"]["test"]["rows"]
    assert list(rows) == ["Real", str(base)]
    real, model = rows["Real"], rows[str(base)]
    assert "MultiModality" not in real and "MultiModality" in model
    assert model["FID"]["mean"] > real["FID"]["mean"]
    assert {"Oracle", "Reward"} <= set(model) and 0 <= model["Oracle"]["mean"] <= 1
    assert all(v["ci95"] >= 0 for v in model.values())


def test_evaluate_reports_a_missing_checkpoint_as_a_user_error(smoke_workdir: Path,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["evaluate", *smoke_args(smoke_workdir), "--checkpoint", "no/such/model.pt"]) == 2
    assert "error: checkpoint no/such/model.pt not found" in capsys.readouterr().err


def test_reward_score_prints_one_score_per_caption(smoke_workdir: Path, tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    motion = tmp_path / "m.npy"
    np.save(motion, np.load(smoke_workdir / "data" / "mean.npy")[None].repeat(30, 0))
    captions = ["a person walks forward", "a person claps"]
    assert main(["reward", "score", str(motion), *captions, *smoke_args(smoke_workdir)]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 2 and lines[1].endswith("a person claps")
    assert all(0.0 <= float(line.split("\t")[0]) <= 1.0 for line in lines)
    np.save(motion, np.zeros((30, 22, 3), np.float32))
    assert main(["reward", "score", str(motion), "x", *smoke_args(smoke_workdir)]) == 2
    assert "expected [frames, 263]" in capsys.readouterr().err


def test_without_config_the_checkpoint_config_is_used_but_evaluation_settings_are_the_defaults() -> None:
    trained = config_to_dict(load_config(None, ["data.max_frames=80", "evaluator.num_captions=999"]))
    args = argparse.Namespace(config=None, overrides=["evaluator.replications=2"], checkpoint=["m.pt"])
    cfg = resolve_config(args, trained)
    assert cfg.data.max_frames == 80  # the model's own data
    assert cfg.evaluator.num_captions == load_config(None).evaluator.num_captions  # not the training-time value
    assert cfg.evaluator.replications == 2


def test_evaluate_compares_checkpoints_paired_on_the_oracle(smoke_workdir: Path, tmp_path: Path,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    base = next((smoke_workdir / "base").rglob("base.pt"))
    copy = tmp_path / "copy.pt"
    shutil.copy(base, copy)
    out = tmp_path / "paired.json"
    args = ["evaluate", *smoke_args(smoke_workdir), "--checkpoint", str(base), "--checkpoint", str(copy),
            "--split", "test", "--split", "train", "--paired-only", "--paired-draws", "2", "--out", str(out),
            "--evaluator", str(tmp_path / "no_evaluator.pt")]
    assert main(args) == 0
    assert not (tmp_path / "no_evaluator.pt").exists()                  # the oracle needs no evaluator: none trained
    printed = capsys.readouterr().out
    assert "x 2 noise draws" in printed and "R@1" not in printed           # no metric tables
    assert printed.index("test split") < printed.index("train split")
    splits = json.loads(out.read_text())["splits"]
    assert splits["train"]["motions"] > splits["test"]["motions"]       # the training split's own motions
    for split in splits.values():
        assert "rows" not in split
        paired = split["paired_oracle"][str(copy)]
        assert paired["samples"] == 2 * split["motions"]
        assert paired["delta"] == 0.0 and paired["ci95"] == 0.0 and paired["mean"] == paired["first"]  # same model
        groups = paired["by_actions"]
        assert groups and all(g["delta"] == 0.0 for g in groups.values())
        assert sum(g["samples"] for g in groups.values()) <= paired["samples"]
    assert "by actions in the caption: 1 action " in printed


def test_the_paired_difference_splits_by_the_captions_number_of_actions_by_the_captions_number_of_actions() -> None:
    first = np.array([0.2, 0.4, 0.5, 0.5, 0.9])
    other = np.array([0.6, 0.8, 0.5, 0.3, 0.1])
    groups = paired_difference_by_actions(first, other, np.array([1, 1, 2, 2, 3]))
    assert list(groups) == ["1", "2"]                                   # a group of one sample has no interval
    assert groups["1"]["delta"] == pytest.approx(0.4) and groups["1"]["ci95"] == pytest.approx(0.0)
    assert groups["2"]["delta"] == pytest.approx(-0.1) and groups["2"]["samples"] == 2
    assert groups["2"]["first"] == pytest.approx(0.5) and groups["2"]["mean"] == pytest.approx(0.4)


@pytest.mark.parametrize(("extra", "message"), [
    (["--paired-draws", "0"], "--paired-draws must be at least 1"),
    (["--paired-only"], "--paired-only compares checkpoints with the first one"),
    (["--split", "train"], "--split train gives only the paired oracle comparison"),
    (["--split", "test", "--split", "train"], "add --paired-only, or pick a held-out split"),
])
def test_evaluate_refuses_bad_paired_options(smoke_workdir: Path, extra: list[str], message: str,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    base = next((smoke_workdir / "base").rglob("base.pt"))
    assert main(["evaluate", *smoke_args(smoke_workdir), "--checkpoint", str(base), *extra]) == 2
    assert message in capsys.readouterr().err


def load_script(name: str) -> Any:
    """A module under scripts/ (analysis scripts are not part of the package)."""
    path = Path(__file__).resolve().parents[1] / "scripts" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_preference_shift_error_change_is_zero_for_the_base_itself_and_not_for_a_changed_policy(
        smoke_workdir: Path) -> None:
    from sopo_ray.data import load_dataset
    from sopo_ray.models.generator import load_generator

    shift = load_script("preference_shift")
    cfg = load_config(str(SMOKE), [f"workdir={smoke_workdir}", f"data.root={smoke_workdir}/data"])
    data = load_dataset(cfg.data, "train")
    base, _ = load_generator(next((smoke_workdir / "base").rglob("base.pt")), data.data_id)
    other, _ = load_generator(next((smoke_workdir / "base").rglob("base.pt")), data.data_id)
    with torch.no_grad():
        for p in other.denoiser.parameters():
            p.add_(0.01 * torch.randn_like(p))
    texts = [data.captions[i][0] for i in range(6)]
    lengths = torch.as_tensor(np.asarray(data.lengths[:6]), dtype=torch.long)
    motions = torch.from_numpy(np.array(data.features[:6], dtype=np.float32))
    own = shift.denoising_error(base, base, texts, lengths, motions, draws=2, seed=0)
    same = shift.denoising_error(base, base, texts, lengths, motions, draws=2, seed=0) - own
    moved = shift.denoising_error(other, base, texts, lengths, motions, draws=2, seed=0) - own
    assert same.shape == (6,) and np.all(same == 0)          # one seed, the same (t, noise) draws
    assert np.all(np.isfinite(moved)) and np.abs(moved).max() > 0
    assert np.all(own > 0) and np.all(np.isfinite(own))


@pytest.mark.parametrize(("extra", "message"), [
    (["--split", "test", "--captions", "4"], "groups tie"),                # the smoke base's samples all score alike
    (["--set", "data.source=nope"], "data.source"),
])
def test_preference_shift_script_refuses_what_it_cannot_measure_in_one_line(
        smoke_workdir: Path, tmp_path: Path, extra: list[str], message: str) -> None:
    root = Path(__file__).resolve().parents[1]
    base = next((smoke_workdir / "base").rglob("base.pt"))
    cmd = [sys.executable, "scripts/preference_shift.py", "--config", "configs/smoke.yaml",
           "--set", f"workdir={smoke_workdir}", "--set", f"data.root={smoke_workdir}/data",
           "--policy", str(base), "--t-draws", "1", *extra]
    done = subprocess.run(cmd, cwd=root, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "PYTHONPATH": str(root)})
    assert done.returncode == 2 and done.stderr.startswith("error: ") and message in done.stderr
    assert "Traceback" not in done.stderr
