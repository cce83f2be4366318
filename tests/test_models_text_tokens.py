"""`model.text_tokens`: a denoiser that attends to the caption's MiniLM token states as well as its sentence
embedding. The layout of the condition, padding and dropped text masked out, word order readable (a model learns
what a pooled condition cannot tell apart), the fast sampler, pretraining, a learner step, checkpoints, and the
configs it refuses."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
import torch

from sopo_ray.algorithm import PolicyErrors, PreferenceBatch, preference_terms
from sopo_ray.config import load_config
from sopo_ray.errors import ConfigError
from sopo_ray.models.generator import MotionGenerator, build_generator, load_generator, save_generator
from sopo_ray.models.pretrain import build_training_set
from sopo_ray.models.text_encoder import get_text_encoder
from sopo_ray.models.token_encoder import get_token_encoder

torch.set_num_threads(1)
TINY = ["data.max_frames=24", "data.min_frames=8", "model.latent_dim=32", "model.num_layers=2", "model.num_heads=2",
        "model.ff_dim=64", "model.frames_per_token=1", "diffusion.num_timesteps=20", "diffusion.sample_steps=5",
        "model.dropout=0"]
CAPTIONS = ["a person jogs forward, then waves with the left hand.",
            "a person waves with the left hand, then jogs forward.",
            "a person jumps."]


def tiny(*extra: str, kind: str = "mdm") -> MotionGenerator:
    cfg = load_config(None, [*TINY, f"model.kind={kind}", *extra])
    rng = np.random.default_rng(0)
    return build_generator(cfg, (rng.normal(size=263).astype(np.float32), rng.uniform(0.5, 2, 263))).eval()


def test_the_condition_is_the_sentence_then_the_token_states_zero_padded() -> None:
    gen = tiny("model.text_tokens=12")
    cond = gen.encode_text(CAPTIONS)
    words, counts = get_token_encoder("minilm").encode(CAPTIONS)
    assert cond.shape == (3, 13, 384)
    torch.testing.assert_close(cond[:, 0], get_text_encoder("minilm").encode(CAPTIONS))
    present = cond[:, 1:].abs().amax(-1) > 0
    assert present.sum(1).tolist() == counts.clamp(max=12).tolist()  # the long captions are cut at 12 tokens
    torch.testing.assert_close(cond[2, 1: 1 + int(counts[2])], words[2, : int(counts[2])])
    assert torch.equal(tiny().encode_text(CAPTIONS), cond[:, 0])     # text_tokens 0: the sentence alone


def test_padding_and_a_dropped_text_are_masked_out() -> None:
    gen = tiny("model.text_tokens=24")
    cond = gen.encode_text(CAPTIONS)
    x_t, t = torch.randn(3, 20, 263), torch.tensor([3, 7, 11])
    mask = torch.ones(3, 20, dtype=torch.bool)
    with torch.no_grad():
        together = gen.denoiser(x_t, t, cond, mask)
        alone = gen.denoiser(x_t[2:], t[2:], cond[2:], mask[2:])      # the short caption padded to its own length
        torch.testing.assert_close(together[2:], alone, atol=1e-5, rtol=1e-5)
        drop = torch.zeros(3, dtype=torch.bool)
        other = gen.encode_text(["someone kneels down.", "a man claps twice.", "a person turns left."])
        # the unconditional branch sees the null condition alone, whatever the caption's words
        torch.testing.assert_close(gen.denoiser(x_t, t, cond, mask, drop), gen.denoiser(x_t, t, other, mask, drop))
        swapped = cond.clone()
        swapped[:, 1:] = cond[:, 1:].flip(1)   # the same words in another order, the same sentence row
        assert not torch.allclose(gen.denoiser(x_t, t, swapped, mask), together, atol=1e-4)


@pytest.mark.parametrize("kind", ["mdm", "mld"])
def test_the_fast_sampler_samples_what_the_eager_one_does(kind: str) -> None:
    gen = tiny("model.text_tokens=24", kind=kind)
    cond = gen.encode_text(CAPTIONS)
    fast = gen.sample(cond, [24, 13, 9], [0, 1, 2], steps=4, guidance=2.5, fast=True)
    eager = gen.sample(cond, [24, 13, 9], [0, 1, 2], steps=4, guidance=2.5, fast=False)
    torch.testing.assert_close(fast, eager, atol=1e-4, rtol=1e-4)


def _order_loss(text_tokens: int, steps: int = 300) -> float:
    """Train a tiny denoiser on two texts whose sentence rows are equal and whose words come in opposite orders,
    with opposite targets; the final mean error of predicting x0 at the noisiest step."""
    gen = tiny(f"model.text_tokens={text_tokens}").train()
    g = torch.Generator().manual_seed(0)
    sentence = torch.nn.functional.normalize(torch.randn(384, generator=g), dim=0)
    words = torch.randn(4, 384, generator=g)
    text = torch.zeros(2, 5, 384)
    text[:, 0] = sentence
    text[0, 1:], text[1, 1:] = words, words.flip(0)
    if not text_tokens:
        text = text[:, 0]
    x0 = torch.stack([torch.ones(12, 263), -torch.ones(12, 263)])
    mask = torch.ones(2, 12, dtype=torch.bool)
    t = torch.full((2,), gen.num_timesteps - 1)
    opt = torch.optim.Adam(gen.denoiser.parameters(), lr=3e-3)
    for _ in range(steps):
        loss = gen.denoise_error(x0, mask, t, torch.randn(2, 12, 263, generator=g), text).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return float(loss.detach())


def test_word_tokens_learn_an_order_a_pooled_sentence_cannot_tell() -> None:
    assert _order_loss(text_tokens=4) < 0.1       # the two orders get their own targets
    assert _order_loss(text_tokens=0) > 0.8       # one shared input: the best it can do is the mean, error ~1


def test_pretraining_set_and_a_learner_step_carry_the_words() -> None:
    from sopo_ray.data.dataset import MotionDataset

    cfg = load_config(None, [*TINY, "model.text_tokens=16", "model.cond_drop_prob=0.25"])
    gen = tiny("model.text_tokens=16", "model.cond_drop_prob=0.25")
    rng = np.random.default_rng(0)
    data = MotionDataset(motion_ids=["a", "b", "c", "d"], features=rng.normal(size=(4, 24, 263)).astype(np.float32),
                         lengths=np.array([24, 20, 16, 12]), captions=[[c] for c in [*CAPTIONS, "someone kicks."]],
                         params=None, mean=gen.mean.numpy(), std=gen.std.numpy(), data_id="t", skeleton="t2m")
    train = build_training_set(gen, data)
    _, _, text = train.batch(torch.Generator().manual_seed(0), 3)
    assert train.text_emb.shape == (4, 17, 384) and text.shape == (3, 17, 384)

    reference = copy.deepcopy(gen).requires_grad_(False)
    g = torch.Generator().manual_seed(1)
    batch = PreferenceBatch(
        captions=CAPTIONS, x_w=torch.randn(3, 24, 263, generator=g), len_w=torch.tensor([24, 20, 16]),
        x_l=torch.randn(3, 24, 263, generator=g), len_l=torch.tensor([24, 20, 16]),
        reward_l=torch.tensor([0.2, 0.4, 0.6]), sims_w=torch.rand(3, 2, generator=g), staleness=[0, 0, 0],
        group_metrics={})
    terms = preference_terms(cfg, PolicyErrors(gen), gen, reference, batch, torch.Generator().manual_seed(3), "cpu")
    terms.err_w_theta.sum().backward()
    assert gen.denoiser.word_proj.weight.grad.abs().sum() > 0
    assert gen.denoiser.word_positions.grad.abs().sum() > 0


def test_a_token_checkpoint_round_trips(tmp_path: Path) -> None:
    cfg = load_config(None, [*TINY, "model.text_tokens=16"])
    gen = tiny("model.text_tokens=16")
    save_generator(tmp_path / "base.pt", gen, cfg, None)
    loaded, config = load_generator(tmp_path / "base.pt")
    assert config["model"]["text_tokens"] == 16
    cond = gen.encode_text(CAPTIONS)
    torch.testing.assert_close(loaded.sample(cond, [24, 13, 9], [0, 1, 2], steps=3),
                               gen.sample(cond, [24, 13, 9], [0, 1, 2], steps=3))


@pytest.mark.parametrize("setting, needle", [
    (["model.text_tokens=8", "model.architecture=mdm_official", "model.frames_per_token=1"], "mdm_official"),
    (["model.text_tokens=8", "model.text_encoder=clip"], "clip"),
    (["model.text_tokens=-1"], "text_tokens"),
    (["model.text_tokens=65"], "text_tokens"),
    (["model.text_tokens=many"], "text_tokens"),
])
def test_configs_it_cannot_serve_are_refused(setting: list[str], needle: str) -> None:
    with pytest.raises(ConfigError, match=needle):
        load_config(None, setting)


def test_a_condition_of_the_wrong_shape_is_refused() -> None:
    x_t, t, mask = torch.randn(2, 20, 263), torch.tensor([1, 2]), torch.ones(2, 20, dtype=torch.bool)
    words, sentence = tiny("model.text_tokens=8"), tiny()
    with pytest.raises(ValueError, match=r"\[B, 1 \+ words, E\].*text_tokens=8.*encode_text"):
        words.denoiser(x_t, t, torch.randn(2, 384), mask)
    with pytest.raises(ValueError, match=r"reads \[B, E\].*text_tokens=0"):
        sentence.denoiser(x_t, t, torch.randn(2, 9, 384), mask)
