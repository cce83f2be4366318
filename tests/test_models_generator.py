"""MotionGenerator (contract C): shapes, masking, seeded DDIM, classifier-free guidance, gradients, checkpoints."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from sopo_ray.checkpoint import save_checkpoint
from sopo_ray.config import config_to_dict, load_config
from sopo_ray.errors import CheckpointError, ConfigError
from sopo_ray.models.generator import MotionGenerator, build_generator, load_generator, save_generator

torch.set_num_threads(1)
FRAMES = 24
TINY = ["data.max_frames=24", "data.min_frames=8", "model.latent_dim=32", "model.num_layers=2", "model.num_heads=2",
        "model.ff_dim=64", "model.vae_num_layers=1", "model.vae_latent_tokens=2", "model.vae_latent_dim=8",
        "model.frames_per_token=1",
        "diffusion.num_timesteps=20", "diffusion.sample_steps=5"]


def tiny_generator(kind: str, *extra: str) -> MotionGenerator:
    cfg = load_config(None, [*TINY, f"model.kind={kind}", *extra])
    rng = np.random.default_rng(0)
    gen = build_generator(cfg, (rng.normal(size=263).astype(np.float32), rng.uniform(0.5, 2, 263)))
    return gen.eval()


def text(batch: int, seed: int = 0) -> torch.Tensor:
    return torch.nn.functional.normalize(torch.randn(batch, 384, generator=torch.Generator().manual_seed(seed)), dim=-1)


@pytest.fixture(scope="module", params=["mdm", "mdm_patch2", "mld", "mld_patch2", "mdm_official"])
def gen(request: pytest.FixtureRequest) -> MotionGenerator:
    if request.param == "mdm_official":  # the released MDM's layout (sopo_ray/models/mdm_official.py)
        return tiny_generator("mdm", "model.architecture=mdm_official")
    kind, *patch = request.param.split("_patch")
    return tiny_generator(kind, *[f"model.frames_per_token={p}" for p in patch])


def test_model_space_shapes(gen: MotionGenerator) -> None:
    features = torch.randn(3, FRAMES, 263)
    lengths = torch.tensor([24, 10, 17])
    x0, mask = gen.to_model_space(features, lengths)
    if gen.kind == "mdm":
        assert x0.shape == (3, FRAMES, 263)
        assert mask.sum(1).tolist() == [24, 10, 17]
        assert torch.all(x0[1, 10:] == 0)
        torch.testing.assert_close(gen.denormalize(x0[0]), features[0], atol=1e-5, rtol=1e-5)
    else:
        assert x0.shape == (3, 2, 8)
        assert mask.all()
    assert not x0.requires_grad


def test_sample_shapes_and_zero_padding(gen: MotionGenerator) -> None:
    out = gen.sample(text(3), [24, 5, 13], seeds=[0, 1, 2], steps=3, guidance=2.5)
    assert out.shape == (3, 24, 263)
    assert torch.isfinite(out).all()
    assert torch.all(out[1, 5:] == 0) and torch.all(out[2, 13:] == 0)
    assert torch.all(out[1, :5].abs().sum(-1) > 0)
    with pytest.raises(ConfigError, match="length"):
        gen.sample(text(1), [FRAMES + 1], seeds=[0], steps=2, guidance=1.0)


@pytest.mark.parametrize("frames_per_token", [1, 2])
def test_padding_frames_do_not_affect_valid_outputs(frames_per_token: int) -> None:
    gen = tiny_generator("mdm", f"model.frames_per_token={frames_per_token}")
    x = torch.randn(2, FRAMES, 263)
    mask = torch.arange(FRAMES)[None] < torch.tensor([[15], [24]])
    t = torch.tensor([3, 17])
    changed = x.clone()
    changed[0, 15:] = 100 * torch.randn(FRAMES - 15, 263)
    with torch.no_grad():
        a = gen.denoiser(x, t, text(2), mask)
        b = gen.denoiser(changed, t, text(2), mask)
    torch.testing.assert_close(a[0, :15], b[0, :15], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(a[1], b[1])
    noise = torch.randn_like(x)
    err_a = gen.denoise_error(x, mask, t, noise, text(2))
    noise_changed = noise.clone()
    noise_changed[0, 15:] = torch.randn(FRAMES - 15, 263)
    err_b = gen.denoise_error(changed, mask, t, noise_changed, text(2))
    torch.testing.assert_close(err_a, err_b, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("mask_frames", [True, False])
def test_released_mdm_layout_sees_padding_only_without_mask_frames(mask_frames: bool) -> None:
    gen = tiny_generator("mdm", "model.architecture=mdm_official", f"model.mask_frames={mask_frames}")
    x = torch.randn(1, FRAMES, 263)
    mask = torch.arange(FRAMES)[None] < 15
    changed = x.clone()
    changed[0, 15:] = 100 * torch.randn(FRAMES - 15, 263)
    with torch.no_grad():
        a, b = (gen.denoiser(v, torch.tensor([3]), text(1), mask)[0, :15] for v in (x, changed))
    assert gen.full_length is not mask_frames
    assert torch.allclose(a, b, atol=1e-5) is mask_frames


def test_ddim_is_deterministic_per_seed(gen: MotionGenerator) -> None:
    emb = text(2)
    a = gen.sample(emb, [20, 20], seeds=[7, 8], steps=4, guidance=2.5)
    b = gen.sample(emb, [20, 20], seeds=[7, 8], steps=4, guidance=2.5)
    c = gen.sample(emb, [20, 20], seeds=[9, 8], steps=4, guidance=2.5)
    assert torch.equal(a, b)
    assert not torch.allclose(a[0], c[0])
    torch.testing.assert_close(a[1], c[1])


@pytest.mark.parametrize("eta", [0.0, 1.0])
def test_sample_does_not_depend_on_batch_composition(gen: MotionGenerator, eta: float) -> None:
    emb = text(3, seed=5)
    alone = gen.sample(emb[1:2], [12], seeds=[42], steps=4, guidance=2.5, eta=eta)
    batched = gen.sample(emb[[2, 1, 0]], [24, 12, 7], seeds=[3, 42, 11], steps=4, guidance=2.5, eta=eta)
    torch.testing.assert_close(batched[1, :12], alone[0], atol=1e-5, rtol=1e-4)


def test_classifier_free_guidance(gen: MotionGenerator) -> None:
    x = torch.randn(2, gen.model_seq_len if gen.kind == "mld" else 10, gen.model_channels)
    mask = torch.ones(x.shape[:2], dtype=torch.bool)
    t = torch.tensor([4, 11])
    emb = text(2)
    with torch.no_grad():
        cond = gen.denoiser(x, t, emb, mask)
        uncond = gen.denoiser(x, t, emb, mask, torch.zeros(2, dtype=torch.bool))
    assert not torch.allclose(cond, uncond, atol=1e-4)
    torch.testing.assert_close(gen._guided(x, t, emb, mask, 1.0), cond)
    torch.testing.assert_close(gen._guided(x, t, emb, mask, 0.0), uncond)
    torch.testing.assert_close(gen._guided(x, t, emb, mask, 2.5), uncond + 2.5 * (cond - uncond),
                               atol=1e-5, rtol=1e-5)
    other = text(2, seed=1)
    same_uncond = gen.sample(emb, [16, 16], [1, 2], steps=3, guidance=0.0)
    torch.testing.assert_close(same_uncond, gen.sample(other, [16, 16], [1, 2], steps=3, guidance=0.0))
    assert not torch.allclose(gen.sample(emb, [16, 16], [1, 2], steps=3, guidance=1.0),
                              gen.sample(other, [16, 16], [1, 2], steps=3, guidance=1.0))


@pytest.mark.parametrize("kind", ["mdm", "mld"])
def test_denoise_error_gradient_reaches_denoiser_only(kind: str) -> None:
    gen = tiny_generator(kind).train()
    x0, mask = gen.to_model_space(torch.randn(2, FRAMES, 263), torch.tensor([24, 9]))
    err = gen.denoise_error(x0, mask, torch.tensor([2, 15]), torch.randn_like(x0), text(2))
    assert err.shape == (2,) and torch.all(err > 0)
    err.sum().backward()
    for name, p in gen.denoiser.named_parameters():
        assert p.grad is not None, name
    assert any(p.grad.abs().sum() > 0 for p in gen.trainable_parameters())
    if kind == "mld":
        assert all(p.grad is None for p in gen.latent.parameters())


@pytest.mark.parametrize("kind", ["mdm", "mld"])
def test_checkpoint_round_trip(kind: str, tmp_path: Path) -> None:
    gen = tiny_generator(kind)
    cfg = load_config(None, [*TINY, f"model.kind={kind}"])
    path = save_generator(tmp_path / "g.pt", gen, cfg, "data-1", length_median=20)
    loaded, cfg_dict = load_generator(path, data_id="data-1")
    assert loaded.kind == kind and cfg_dict["model"]["kind"] == kind
    emb = text(2)
    torch.testing.assert_close(loaded.sample(emb, [10, 20], [1, 2], steps=3, guidance=2.5),
                               gen.sample(emb, [10, 20], [1, 2], steps=3, guidance=2.5))
    if kind == "mld":  # the loaded VAE is frozen: no dropout even when the policy trains
        loaded.train()
        assert not loaded.latent.vae.training and loaded.denoiser.training
        features, lengths = torch.randn(2, FRAMES, 263), torch.tensor([24, 9])
        assert torch.equal(loaded.to_model_space(features, lengths)[0], loaded.to_model_space(features, lengths)[0])
        loaded.eval()
    other = "mld" if kind == "mdm" else "mdm"
    with pytest.raises(CheckpointError, match=f"holds a '{kind}' model"):
        load_generator(path, kind=other)
    with pytest.raises(CheckpointError, match="dataset"):
        load_generator(path, data_id="data-2")


def test_a_checkpoint_whose_training_sections_this_version_does_not_know_still_loads(tmp_path: Path) -> None:
    """Only data, model and diffusion rebuild a generator: a base model saved by an earlier version (whose schedule
    section held the optimizer keys) loads, and a model key this version does not know is still refused."""
    gen = tiny_generator("mdm")
    cfg = load_config(None, TINY)
    old = config_to_dict(cfg)
    old["schedule"] = {**old["schedule"], "lr": 1e-5, "checkpoint_interval": 50}
    path = save_checkpoint(tmp_path / "old.pt", "mdm", {k: v.detach() for k, v in gen.state_dict().items()}, old)
    loaded, _ = load_generator(path)
    emb = text(1)
    torch.testing.assert_close(loaded.sample(emb, [10], [3], steps=3, guidance=2.5),
                               gen.sample(emb, [10], [3], steps=3, guidance=2.5))
    old["model"] = {**old["model"], "width": 64}
    save_checkpoint(tmp_path / "odd.pt", "mdm", {k: v.detach() for k, v in gen.state_dict().items()}, old)
    with pytest.raises(CheckpointError, match="config this version cannot read"):
        load_generator(tmp_path / "odd.pt")


def test_checkpoint_from_another_config_is_a_clear_error(tmp_path: Path) -> None:
    gen = tiny_generator("mdm")
    wider = load_config(None, [*TINY, "model.latent_dim=48"])
    path = save_generator(tmp_path / "g.pt", gen, wider, None)
    with pytest.raises(CheckpointError, match="does not fit a mdm model of this config"):
        load_generator(path)
