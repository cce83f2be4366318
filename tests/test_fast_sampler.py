"""The fast sampler (`diffusion.fast_sampler`): the same motions as the eager sampler for the same seeds, within
TOL, on every architecture; each sample still depends only on its own seed; the switch reaches every sampler."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from sopo_ray.config import load_config
from sopo_ray.errors import ConfigError
from sopo_ray.evaluation.protocol import generator_source
from sopo_ray.models.generator import MotionGenerator, build_generator
from sopo_ray.models.inference import encoder_forward, length_buckets, supports_fast

torch.set_num_threads(1)
REPO = Path(__file__).resolve().parents[1]
TOL = 1e-4
"""max |fast - eager| <= TOL * max(1, max |eager|) on un-normalised features (std 0.5-2 here): measured 1e-6 to 4e-6
where samples are O(1); the untrained eps-predicting model's samples reach ~3500 and differ by up to 1e-3 there
(float32 rounding at that size, 3e-7 of it)."""
TINY = ["data.max_frames=30", "data.min_frames=4", "model.latent_dim=32", "model.num_layers=2", "model.num_heads=2",
        "model.ff_dim=64", "model.vae_num_layers=1", "model.vae_latent_tokens=2", "model.vae_latent_dim=8",
        "diffusion.num_timesteps=20", "diffusion.sample_steps=5"]
LENGTHS = [30, 7, 19, 30, 4, 11, 25, 8, 13, 30, 5, 22]
"""Mixed lengths, odd and even, several at the maximum: with 4 samples per bucket, three buckets."""


def assert_same(fast: torch.Tensor, eager: torch.Tensor) -> None:
    assert fast.shape == eager.shape
    scale = max(1.0, float(eager.abs().max()))
    assert float((fast - eager).abs().max()) <= TOL * scale


def tiny(*extra: str) -> MotionGenerator:
    cfg = load_config(None, [*TINY, *extra])
    rng = np.random.default_rng(0)
    gen = build_generator(cfg, (rng.normal(size=263).astype(np.float32), rng.uniform(0.5, 2, 263))).eval()
    gen.bucket_samples = 4
    return gen


def text(batch: int) -> torch.Tensor:
    return nn.functional.normalize(torch.randn(batch, 384, generator=torch.Generator().manual_seed(0)), dim=-1)


ARCHITECTURES = {
    "mdm": ["model.frames_per_token=1"],
    "mdm_patch2": ["model.frames_per_token=2"],
    "mdm_eps": ["model.frames_per_token=1", "model.prediction=eps"],
    "mdm_official_masked": ["model.architecture=mdm_official", "model.frames_per_token=1", "model.mask_frames=true"],
    "mdm_official_full_length": ["model.architecture=mdm_official", "model.frames_per_token=1",
                                 "model.mask_frames=false"],
    "mld": ["model.kind=mld", "model.frames_per_token=1"],
}


@pytest.fixture(scope="module", params=list(ARCHITECTURES))
def gen(request: pytest.FixtureRequest) -> MotionGenerator:
    return tiny(*ARCHITECTURES[request.param])


@pytest.mark.parametrize(("eta", "guidance"), [(0.0, 2.5), (0.7, 2.5), (0.0, 1.0), (0.0, 0.0)])
def test_fast_matches_eager(gen: MotionGenerator, eta: float, guidance: float) -> None:
    seeds = list(range(100, 100 + len(LENGTHS)))
    eager = gen.sample(text(len(LENGTHS)), LENGTHS, seeds, steps=5, guidance=guidance, eta=eta, fast=False)
    fast = gen.sample(text(len(LENGTHS)), LENGTHS, seeds, steps=5, guidance=guidance, eta=eta, fast=True)
    assert fast.shape == eager.shape == (len(LENGTHS), 30, 263)
    assert eager.abs().max() > 0.1  # a real signal, not two zero tensors
    assert_same(fast, eager)
    for i, n in enumerate(LENGTHS):
        assert torch.all(fast[i, n:] == 0)


def test_fast_matches_eager_ancestral() -> None:
    gen = tiny("model.frames_per_token=2")
    seeds = list(range(len(LENGTHS)))
    eager = gen.sample(text(len(LENGTHS)), LENGTHS, seeds, guidance=2.5, ancestral=True, fast=False)
    assert_same(gen.sample(text(len(LENGTHS)), LENGTHS, seeds, guidance=2.5, ancestral=True, fast=True), eager)


def test_fast_sample_depends_only_on_its_seed(gen: MotionGenerator) -> None:
    """Bucketing regroups the batch; each sample is still what it is alone, and a changed seed changes only it."""
    seeds = list(range(len(LENGTHS)))
    emb = text(len(LENGTHS))
    batch = gen.sample(emb, LENGTHS, seeds, steps=3, guidance=2.5, fast=True)
    for i in (1, 6):
        alone = gen.sample(emb[i:i + 1], LENGTHS[i:i + 1], seeds[i:i + 1], steps=3, guidance=2.5, fast=True)
        assert_same(batch[i:i + 1, :LENGTHS[i]], alone)
    other = gen.sample(emb, LENGTHS, [*seeds[:-1], 999], steps=3, guidance=2.5, fast=True)
    assert_same(other[:-1], batch[:-1])
    assert (other[-1] - batch[-1]).abs().max() > 0.01


def test_fast_result_is_an_ordinary_tensor() -> None:
    out = tiny().sample(text(3), [30, 5, 12], [0, 1, 2], steps=2, fast=True)
    assert not out.is_inference()
    assert (out * torch.ones(1, requires_grad=True)).sum().requires_grad  # usable where autograd records


def test_buckets() -> None:
    lengths = torch.tensor(LENGTHS)
    buckets = length_buckets(lengths, 4)
    assert [len(b) for b in buckets] == [4, 4, 4]
    assert sorted(torch.cat(buckets).tolist()) == list(range(len(LENGTHS)))
    flat = [LENGTHS[i] for b in buckets for i in b.tolist()]
    assert flat == sorted(LENGTHS)
    assert [len(b) for b in length_buckets(lengths, 5)] == [4, 4, 4]   # ceil(12 / 5) = 3 near-equal groups
    assert [len(b) for b in length_buckets(lengths, 64)] == [12]
    assert [len(b) for b in length_buckets(torch.tensor([9]), 4)] == [1]
    # full-length and latent models have no padding to save: one batch
    assert len(tiny(*ARCHITECTURES["mld"]).buckets(lengths)) == 1
    assert len(tiny(*ARCHITECTURES["mdm_official_full_length"]).buckets(lengths)) == 1
    assert len(tiny(*ARCHITECTURES["mdm_official_masked"]).buckets(lengths)) == 3


@pytest.mark.parametrize("norm_first", [True, False])
@pytest.mark.parametrize("padded", [True, False])
def test_encoder_forward_matches_the_module(norm_first: bool, padded: bool) -> None:
    torch.manual_seed(0)
    layer = nn.TransformerEncoderLayer(32, 4, 64, 0.1, activation="gelu", batch_first=True, norm_first=norm_first)
    encoder = nn.TransformerEncoder(layer, 2, enable_nested_tensor=False).eval()
    h = torch.randn(5, 9, 32)
    valid = torch.arange(9)[None] < torch.tensor([9, 3, 6, 1, 8])[:, None] if padded else None
    with torch.no_grad():
        want = encoder(h, src_key_padding_mask=None if valid is None else ~valid)
        got = encoder_forward(encoder, h, valid)
    keep = torch.ones(5, 9, 1, dtype=torch.bool) if valid is None else valid[..., None]
    torch.testing.assert_close(got * keep, want * keep, atol=1e-5, rtol=1e-5)


def test_training_mode_keeps_the_module_path() -> None:
    """Dropout in train mode is the module's business: the fast encoder pass is refused there."""
    gen = tiny()
    assert supports_fast(gen.denoiser.encoder)
    gen.train()
    assert not supports_fast(gen.denoiser.encoder)
    gen.eval()


def test_config_switch_reaches_the_generator_and_the_evaluation() -> None:
    assert tiny().fast_sampler is True
    eager_gen = tiny("diffusion.fast_sampler=false")
    assert eager_gen.fast_sampler is False
    with pytest.raises(ConfigError, match="diffusion.fast_sampler=true"):
        load_config(None, ["diffusion.fast_sampler=sometimes"])
    # the evaluation samples the way the run's config says, whatever the checkpoint's config said
    lengths = np.array(LENGTHS[:6])
    captions, seeds = [f"a person walks {i} steps" for i in range(6)], list(range(6))
    cfg = {flag: load_config(None, [*TINY, "evaluator.generate_batch_size=4", f"diffusion.fast_sampler={flag}"])
           for flag in ("true", "false")}
    calls: list[bool] = []
    original = eager_gen.sample

    def recording(*args, **kwargs):
        calls.append(kwargs["fast"])
        return original(*args, **kwargs)

    eager_gen.encode_text = lambda c: text(len(c))  # no text encoder weights needed here
    eager_gen.sample = recording
    fast = generator_source(eager_gen, cfg["true"])(np.arange(6), captions, lengths, seeds)
    eager = generator_source(eager_gen, cfg["false"])(np.arange(6), captions, lengths, seeds)
    assert calls == [True, True, False, False]
    assert_same(torch.from_numpy(fast), torch.from_numpy(eager))



@pytest.mark.parametrize(("flag", "eta"), [("true", 0.0), ("false", 1.0)])
def test_the_runs_config_decides_for_its_rollout_policy(smoke_workdir: Path, flag: str, eta: float) -> None:
    """The cached base checkpoint keeps the config it was built with; the policy a run builds from it (rollouts,
    tau calibration, the local loop, `sopo reward check`) samples as the run's config says: the sampler and the
    DDIM eta."""
    from sopo_ray import artifacts
    from sopo_ray.models.generator import generator_from_payload

    cfg = load_config(REPO / "configs" / "smoke.yaml", [f"workdir={smoke_workdir}",
                                                         f"data.root={smoke_workdir}/data",
                                                         f"diffusion.fast_sampler={flag}", f"diffusion.ddim_eta={eta}"])
    art = artifacts.resolve(cfg, need_evaluator=False)
    policy = generator_from_payload(art.base_payload)
    assert policy.fast_sampler is (flag == "true")
    assert policy.eta == eta


def test_the_evaluation_samples_with_the_runs_eta() -> None:
    """`diffusion.ddim_eta` of the evaluating config, not the checkpoint's, decides the evaluation's samples: eta 1
    draws fresh noise at every step, so its samples differ from eta 0's for the same seeds."""
    gen = tiny()
    gen.encode_text = lambda c: text(len(c))  # no text encoder weights needed here
    lengths = np.array(LENGTHS[:4])
    captions, seeds = [f"a person walks {i} steps" for i in range(4)], list(range(4))
    got = {eta: generator_source(gen, load_config(None, [*TINY, f"diffusion.ddim_eta={eta}"]))(
        np.arange(4), captions, lengths, seeds) for eta in (0.0, 1.0)}
    for eta, samples in got.items():
        direct = gen.sample(text(4), torch.as_tensor(lengths), seeds, steps=5, guidance=2.5, eta=eta).numpy()
        assert_same(torch.from_numpy(samples), torch.from_numpy(direct))
    assert np.abs(got[0.0] - got[1.0]).max() > 1e-2
