"""The paper's setup end to end on the user's released files: `artifacts.resolve` imports the released MDM, TMR and
T2M evaluator (official layouts, random weights, a small MDM) instead of building anything, and the rollout,
learner and evaluation code paths run on them unchanged (no Ray: the same functions the actors call)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from released_layouts import mdm_state, write_humanml3d, write_t2m, write_tmr
from tiny_hf_models import write_tiny_clip, write_tiny_distilbert

from sopo_ray import artifacts
from sopo_ray.algorithm import PolicyErrors, preference_batch, preference_terms, sample_groups
from sopo_ray.config import load_config, with_absolute_paths
from sopo_ray.distributed.group import caption_table
from sopo_ray.evaluation.evaluator import load_evaluator
from sopo_ray.evaluation.protocol import evaluate_generator
from sopo_ray.models.generator import generator_from_payload
from sopo_ray.objectives import objective_loss
from sopo_ray.reward import reward_from_payload

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def files(tmp_path_factory, humanml3d_sample):
    root = tmp_path_factory.mktemp("released")
    clip = np.load(humanml3d_sample / "new_joint_vecs" / "012314.npy")
    data = write_humanml3d(root / "HumanML3D", clip, np.load(humanml3d_sample / "Mean.npy"),
                           np.load(humanml3d_sample / "Std.npy"))
    (root / "mdm").mkdir()
    torch.save(mdm_state(d=64, layers=2, ff=128), root / "mdm" / "model000750000.pt")
    tmr, tmr_stats, *_ = write_tmr(root / "tmr", torch.tensor(clip.mean(0)), torch.tensor(clip.std(0)))
    t2m, glove, *_ = write_t2m(root / "t2m")
    return {"data": data, "mdm": root / "mdm" / "model000750000.pt", "tmr": tmr, "tmr_stats": tmr_stats,
            "t2m": t2m, "glove": glove, "t2m_stats": humanml3d_sample / "evaluator_norm",
            "clip": write_tiny_clip(root / "clip"), "bert": write_tiny_distilbert(root / "bert")}


@pytest.fixture
def cfg(files, tmp_path, monkeypatch):
    import sopo_ray.models.text_encoder as text_encoder
    import sopo_ray.models.token_encoder as token_encoder

    monkeypatch.setenv("SOPO_CLIP_DIR", str(files["clip"]))
    monkeypatch.setenv("SOPO_DISTILBERT_DIR", str(files["bert"]))
    monkeypatch.setattr(text_encoder, "_INSTANCES", {})
    monkeypatch.setattr(token_encoder, "_INSTANCES", {})
    return load_config(None, overrides(files, tmp_path))


def overrides(files: dict, tmp_path) -> list[str]:
    return [
        "model.architecture=mdm_official", "model.text_encoder=clip", "model.latent_dim=64", "model.num_layers=2",
        "model.num_heads=4", "model.ff_dim=128", "model.frames_per_token=1", "data.source=humanml3d",
        f"data.root={files['data']}", f"workdir={tmp_path / 'artifacts'}", f"pretrained.mdm={files['mdm']}",
        f"pretrained.tmr={files['tmr']}", f"pretrained.tmr_stats={files['tmr_stats']}",
        f"pretrained.t2m_evaluator={files['t2m']}", f"pretrained.t2m_stats={files['t2m_stats']}",
        f"pretrained.glove={files['glove']}", "diffusion.sample_steps=2", "objective.k=2",
        "evaluator.r_precision_pool=3", "evaluator.num_captions=6", "evaluator.replications=2",
        "evaluator.diversity_pairs=4", "evaluator.mm_captions=2", "evaluator.mm_generations=2", "evaluator.mm_pairs=1"]


def test_resolve_imports_the_released_files_once(cfg, files):
    art = artifacts.resolve(cfg)
    assert art.base_path.parent.name == "mdm_official" and art.base_path.name.startswith("imported-")
    assert art.base_payload["imported_from"] == str(files["mdm"]) and art.reward_payload["kind"] == "tmr_official"
    assert art.evaluator_path.name.startswith("t2m_official-")
    stamps = [p.stat().st_mtime_ns for p in (art.base_path, art.reward_path, art.evaluator_path)]
    again = artifacts.resolve(cfg)
    assert [p.stat().st_mtime_ns for p in (again.base_path, again.reward_path, again.evaluator_path)] == stamps
    assert again.reference_id == art.reference_id


def test_another_released_file_is_another_import(cfg, files, tmp_path):
    torch.save(mdm_state(d=64, layers=2, ff=128, seed=7), tmp_path / "other.pt")
    other = cfg.model_copy(update={"pretrained": cfg.pretrained.model_copy(update={"mdm": tmp_path / "other.pt"})})
    assert artifacts.base_path(other) != artifacts.base_path(cfg)


def test_rollout_learner_and_evaluation_run_on_the_imports(cfg):
    art = artifacts.resolve(cfg)
    policy = generator_from_payload(art.base_payload).eval()
    reference = generator_from_payload(art.base_payload).eval().requires_grad_(False)
    reward = reward_from_payload(art.reward_payload)
    table = caption_table(art.train.motion_ids, art.train.captions)
    groups = sample_groups(policy, reward, art.train.features, art.train.lengths, table[:4], version=0, k=2,
                           steps=2, guidance=2.5, eta=0.0, run_seed=0, keep_best=False)
    assert [g.x_l.shape[0] for g in groups] == [int(art.train.lengths[r.motion_index]) for r in table[:4]]
    assert all(((g.rewards >= 0) & (g.rewards <= 1)).all() and np.isfinite(g.sims_w).all() for g in groups)
    batch = preference_batch("sopo", groups, art.train.features, art.train.lengths)
    policy.requires_grad_(False).denoiser.requires_grad_(True)
    terms = preference_terms(cfg, PolicyErrors(policy), policy, reference, batch, torch.Generator().manual_seed(0),
                             "cpu")
    loss, _ = objective_loss(cfg.objective, terms, 1.0, policy.num_timesteps)
    loss.backward()
    assert torch.isfinite(loss) and policy.denoiser.embed_text.weight.grad.abs().sum() > 0
    evaluator = load_evaluator(art.evaluator_path, art.test.data_id)
    row = evaluate_generator(policy, evaluator, reward, art.test, cfg, seed=0)
    assert {"R@1", "FID", "MM-Dist", "Diversity", "MultiModality", "Reward"} <= set(row)
    assert all(np.isfinite(v[0]) for v in row.values())


def test_paper_config_takes_the_released_files(files):
    from pathlib import Path

    paper = Path(__file__).resolve().parents[1] / "configs" / "humanml3d_mdm.yaml"
    cfg = load_config(paper, [f"data.root={files['data']}", f"pretrained.mdm={files['mdm']}"])
    assert (cfg.model.architecture, cfg.model.text_encoder, cfg.model.mask_frames) == ("mdm_official", "clip", False)
    assert cfg.pretrained.tmr is not None and cfg.pretrained.t2m_evaluator is not None
    relative = with_absolute_paths(load_config(paper, ["pretrained.glove=glove"]))  # Ray workers start elsewhere
    assert relative.pretrained.glove == Path("glove").resolve() and relative.pretrained.mdm.is_absolute()


def test_the_documented_commands_import_score_and_evaluate(cfg, files, tmp_path, capsys, humanml3d_sample):
    """`sopo pretrain` imports pretrained.mdm, `sopo reward score` scores with the imported TMR and `sopo evaluate`
    reports the T2M evaluator's table, all from the same --set flags."""
    import json

    from sopo_ray.cli import main

    sets = [item for o in overrides(files, tmp_path) for item in ("--set", o)]
    assert main(["pretrain", *sets]) == 0
    base = artifacts.base_path(cfg)
    assert capsys.readouterr().out.strip().endswith(str(base)) and base.is_file()
    motion = tmp_path / "clip.npy"
    np.save(motion, np.load(humanml3d_sample / "new_joint_vecs" / "012314.npy")[:80])
    assert main(["reward", "score", str(motion), "a person serves a ball", *sets]) == 0
    score = float(capsys.readouterr().out.split()[0])
    assert 0.0 <= score <= 1.0 and artifacts.reward_path(cfg).is_file()
    out = tmp_path / "table.json"
    assert main(["evaluate", *sets, "--checkpoint", str(base), "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    rows = report["splits"]["test"]["rows"]
    assert report["evaluator"] == str(artifacts.evaluator_path(cfg)) and set(rows) == {"Real", str(base)}
    assert rows["Real"]["R@3"]["mean"] == 1.0  # a pool of 3 always holds the true motion in its top 3
