"""Pretraining: the loss goes down, checkpoints resume exactly, and a foreign checkpoint is refused."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from sopo_ray.config import load_config
from sopo_ray.errors import CheckpointError
from sopo_ray.models.generator import build_generator, lengths_to_mask, load_generator
from sopo_ray.models.pretrain import Pretrainer, build_training_set, pretrain

torch.set_num_threads(1)
TINY = ["data.max_frames=24", "data.min_frames=8", "model.latent_dim=32", "model.num_layers=2",
        "model.num_heads=2", "model.ff_dim=64", "model.vae_num_layers=1", "model.vae_latent_tokens=1",
        "model.vae_latent_dim=8", "diffusion.num_timesteps=20", "diffusion.sample_steps=5",
        "pretrain.batch_size=8", "pretrain.lr=2e-3", "pretrain.warmup_steps=3", "pretrain.log_every=5",
        "pretrain.checkpoint_every=10"]


def tiny_dataset():
    """24 motions of two kinds (a slow ramp and an oscillation), each with two captions."""
    from sopo_ray.data.dataset import MotionDataset

    rng = np.random.default_rng(0)
    n, frames = 24, 24
    lengths = rng.integers(12, frames + 1, n)
    features = np.zeros((n, frames, 263), np.float32)
    captions = []
    for i in range(n):
        time = np.arange(lengths[i])[:, None] / frames
        if i % 2:
            features[i, : lengths[i]] = np.sin(8 * time + np.linspace(0, 3, 263)) + 0.05 * rng.normal(size=(1, 263))
            captions.append(["a person waves", "someone waves a hand"])
        else:
            features[i, : lengths[i]] = time * np.linspace(-1, 1, 263) + 0.05 * rng.normal(size=(1, 263))
            captions.append(["a person walks forward", "someone walks ahead"])
    flat = np.concatenate([features[i, : lengths[i]] for i in range(n)])
    return MotionDataset(motion_ids=[f"{i:06d}" for i in range(n)], features=features,
                         lengths=lengths.astype(np.int64), captions=captions, params=None,
                         mean=flat.mean(0), std=flat.std(0) + 1e-3, data_id="tiny-test", skeleton="t2m")


def fixed_batch_loss(gen, dataset) -> float:
    """Denoising loss of `gen` on the whole tiny set with fixed timesteps and noise."""
    data = build_training_set(gen, dataset)
    gen_rng = torch.Generator().manual_seed(123)
    t = torch.randint(0, gen.num_timesteps, (len(dataset),), generator=gen_rng)
    noise = torch.randn(data.x.shape, generator=gen_rng)
    emb = data.text_emb[data.caption_ids[:, 0]]
    with torch.no_grad():
        return float(gen.eval().denoise_error(data.x, lengths_to_mask(data.lengths, data.x.shape[1]), t, noise,
                                              emb).mean())


def reconstruction_error(gen, dataset) -> float:
    """Mean squared error of the MLD VAE's deterministic round trip (posterior mean) on the tiny set."""
    data = build_training_set(gen, dataset)
    mask = lengths_to_mask(data.lengths, data.x.shape[1])[..., None]
    with torch.no_grad():
        gen.eval()
        recon = gen.latent.decode(gen.latent.encode(data.x, data.lengths), data.lengths, data.x.shape[1])
    return float(((recon - data.x) ** 2 * mask).sum() / (mask.sum() * data.x.shape[-1]))


def test_mdm_pretraining_learns_and_resumes_exactly(tmp_path: Path) -> None:
    dataset = tiny_dataset()
    cfg = load_config(None, [*TINY, "pretrain.steps=30", f"workdir={tmp_path}"])
    untrained = fixed_batch_loss(build_generator(cfg, dataset), dataset)

    straight = pretrain(cfg, tmp_path / "a", dataset)
    gen_a, cfg_a = load_generator(straight, data_id="tiny-test")
    assert cfg_a["pretrain"]["steps"] == 30
    assert fixed_batch_loss(gen_a, dataset) < 0.7 * untrained
    records = [json.loads(line) for line in (tmp_path / "a" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [5, 10, 15, 20, 25, 30]

    stopped = Pretrainer(cfg, tmp_path / "b", dataset).run(stop_at=10)
    assert stopped.name == "last.pt" and not (tmp_path / "b" / "base.pt").exists()
    resumed = Pretrainer(cfg, tmp_path / "b", dataset)
    assert resumed.step == 10
    gen_b, _ = load_generator(resumed.run())
    for (name, a), b in zip(gen_a.state_dict().items(), gen_b.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-5, msg=name)

    assert Pretrainer(cfg, tmp_path / "a", dataset).run() == straight
    wider = load_config(None, [*TINY, "pretrain.steps=30", "model.latent_dim=48", f"workdir={tmp_path}"])
    with pytest.raises(CheckpointError, match="model.latent_dim=32"):
        Pretrainer(wider, tmp_path / "a", dataset)
    mld = load_config(None, [*TINY, "model.kind=mld", f"workdir={tmp_path}"])
    with pytest.raises(CheckpointError, match="holds a 'mdm' model"):
        Pretrainer(mld, tmp_path / "a", dataset)


def test_mld_pretraining_trains_vae_then_latent_denoiser(tmp_path: Path) -> None:
    dataset = tiny_dataset()
    cfg = load_config(None, [*TINY, "model.kind=mld", "pretrain.vae_steps=30", "pretrain.steps=10",
                             f"workdir={tmp_path}"])
    untrained = reconstruction_error(build_generator(cfg, dataset), dataset)
    path = pretrain(cfg, tmp_path / "mld", dataset)
    assert (tmp_path / "cache" / "text_minilm.pt").is_file()
    records = [json.loads(line) for line in (tmp_path / "mld" / "metrics.jsonl").read_text().splitlines()]
    assert [r["phase"] for r in records] == ["vae"] * 6 + ["denoiser"] * 2
    gen, _ = load_generator(path)
    assert reconstruction_error(gen, dataset) < 0.8 * untrained
    assert gen.kind == "mld" and float(gen.latent.scale) != 1.0
    assert not any(p.requires_grad for p in gen.latent.parameters())
    out = gen.sample(torch.nn.functional.normalize(torch.randn(2, 384), dim=-1), [24, 10], [0, 1], 3, 2.5)
    assert out.shape == (2, 24, 263) and torch.all(out[1, 10:] == 0)
