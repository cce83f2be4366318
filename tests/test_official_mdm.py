"""Import of a released MDM checkpoint (humanml_enc_512_50steps layout) into the `mdm_official` denoiser.

No released weights can be downloaded here, so each test writes a state dict in MDM's own layout (key names and
shapes read from model/mdm.py of GuyTevet/motion-diffusion-model, random values), imports it, and compares the
forward pass with `reference_mdm`, an independent float64 numpy transcription of MDM's trans_enc forward, on the
real HumanML3D sample clip.
"""

from __future__ import annotations

import argparse
import json
import math

import numpy as np
import pytest
import torch
from released_layouts import mdm_state
from scipy.special import erf

from sopo_ray.config import load_config
from sopo_ray.errors import CheckpointError, ConfigError
from sopo_ray.models.generator import load_generator
from sopo_ray.models.mdm_import import import_mdm

torch.set_num_threads(1)
D, LAYERS, FF, HEADS, FEATS, CLIP = 512, 8, 1024, 4, 263, 512
OFFICIAL = ["model.architecture=mdm_official", "model.text_encoder=clip", f"model.latent_dim={D}",
            f"model.num_layers={LAYERS}", f"model.ff_dim={FF}", f"model.num_heads={HEADS}", "model.frames_per_token=1",
            "model.prediction=x0", "data.source=humanml3d", "diffusion.num_timesteps=50", "diffusion.schedule=cosine"]


def official_state(seed: int = 0) -> dict[str, torch.Tensor]:
    return mdm_state(D, LAYERS, FF, FEATS, CLIP, seed)


def reference_mdm(state: dict[str, torch.Tensor], x: np.ndarray, t: np.ndarray, clip: np.ndarray,
                  uncond: np.ndarray) -> np.ndarray:
    """MDM trans_enc forward, sequence-first as in model/mdm.py, float64: x [B, L, 263] -> x0 [B, L, 263]."""
    s = {k: v.double().numpy() for k, v in state.items()}
    pe = s["sequence_pos_encoder.pe"][:, 0]

    def lin(h: np.ndarray, name: str) -> np.ndarray:
        return h @ s[name + ".weight"].T + s[name + ".bias"]

    def layer_norm(h: np.ndarray, name: str) -> np.ndarray:
        mu, var = h.mean(-1, keepdims=True), h.var(-1, keepdims=True)
        return (h - mu) / np.sqrt(var + 1e-5) * s[name + ".weight"] + s[name + ".bias"]

    def gelu(h: np.ndarray) -> np.ndarray:
        return 0.5 * h * (1 + erf(h / math.sqrt(2)))

    def silu(h: np.ndarray) -> np.ndarray:
        return h / (1 + np.exp(-h))

    time = lin(silu(lin(pe[t], "embed_timestep.time_embed.0")), "embed_timestep.time_embed.2")
    text = lin(np.where(uncond[:, None], 0.0, clip), "embed_text")
    frames = lin(np.transpose(x, (1, 0, 2)), "input_process.poseEmbedding")          # [L, B, d]
    h = np.concatenate([(time + text)[None], frames]) + pe[: x.shape[1] + 1, None]  # [L+1, B, d]
    dh = D // HEADS
    for i in range(LAYERS):
        p = f"seqTransEncoder.layers.{i}."
        qkv = h @ s[p + "self_attn.in_proj_weight"].T + s[p + "self_attn.in_proj_bias"]
        q, k, v = (a.reshape(a.shape[0], a.shape[1], HEADS, dh).transpose(1, 2, 0, 3) for a in np.split(qkv, 3, -1))
        logits = q @ k.transpose(0, 1, 3, 2) / math.sqrt(dh)
        att = np.exp(logits - logits.max(-1, keepdims=True))
        att /= att.sum(-1, keepdims=True)
        o = (att @ v).transpose(2, 0, 1, 3).reshape(h.shape)
        h = layer_norm(h + lin(o, p + "self_attn.out_proj"), p + "norm1")
        h = layer_norm(h + lin(gelu(lin(h, p + "linear1")), p + "linear2"), p + "norm2")
    return np.transpose(lin(h[1:], "output_process.poseFinal"), (1, 0, 2))


@pytest.fixture(scope="module")
def released(tmp_path_factory, humanml3d_sample):
    """(config, released file, imported generator, state, sample clip, Mean, Std)."""
    folder = tmp_path_factory.mktemp("mdm") / "humanml_enc_512_50steps"
    folder.mkdir()
    state = official_state()
    torch.save(state, folder / "model000750000.pt")
    cfg = load_config(None, OFFICIAL)
    mean, std = np.load(humanml3d_sample / "Mean.npy"), np.load(humanml3d_sample / "Std.npy")
    out = import_mdm(cfg, folder / "model000750000.pt", folder / "imported.pt", mean, std, "data-x", "digest")
    gen, _ = load_generator(out, "data-x", "mdm")
    clip = np.load(humanml3d_sample / "new_joint_vecs" / "012314.npy")
    return cfg, folder / "model000750000.pt", gen, state, clip, mean, std


def test_forward_matches_the_reference_on_the_real_clip(released):
    cfg, _, gen, state, clip, mean, std = released
    assert type(gen.denoiser).__name__ == "OfficialMDM" and gen.full_length
    x = np.stack([(clip[:120] - mean) / std, (clip[50:170] - mean) / std])
    rng = np.random.default_rng(0)
    text, t, uncond = rng.normal(size=(2, CLIP)), np.array([0, 37]), np.array([False, True])
    with torch.no_grad():
        ours = gen.denoiser(torch.tensor(x, dtype=torch.float32), torch.tensor(t), torch.tensor(text).float(),
                            torch.ones(2, 120, dtype=torch.bool), torch.tensor(~uncond)).numpy()
    np.testing.assert_allclose(ours, reference_mdm(state, x, t, text, uncond), atol=1e-5, rtol=1e-5)


def test_sampling_runs_on_all_196_frames_with_guidance_as_mdm(released):
    """One DDIM step from t = 49 is x0 = the guided prediction on the seed's full-length noise, cut to length."""
    cfg, _, gen, state, clip, mean, std = released
    text = np.random.default_rng(1).normal(size=(1, CLIP))
    with torch.no_grad():
        ours = gen.sample(torch.tensor(text).float(), [70], [5], steps=1, guidance=2.5).numpy()
    noise = torch.randn((196, FEATS), generator=torch.Generator().manual_seed(5)).double().numpy()[None]
    t = np.array([49])
    cond = reference_mdm(state, noise, t, text, np.array([False]))
    free = reference_mdm(state, noise, t, text, np.array([True]))
    expected = (free + 2.5 * (cond - free))[:, :70] * std + mean
    assert ours.shape == (1, 70, FEATS)
    np.testing.assert_allclose(ours, expected, atol=1e-4, rtol=1e-5)


def test_denoise_error_is_mdm_masked_l2_over_full_length_padding(released):
    cfg, _, gen, state, clip, mean, std = released
    feats = torch.tensor(np.stack([clip[:150], np.pad(clip[:90], ((0, 60), (0, 0)))]), dtype=torch.float32)
    x0, mask = gen.to_model_space(feats, torch.tensor([150, 90]))
    assert x0.shape == (2, 196, FEATS) and mask.sum(1).tolist() == [150, 90]
    t, noise = torch.tensor([10, 45]), torch.randn(x0.shape, generator=torch.Generator().manual_seed(2))
    text = torch.randn(2, CLIP, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        err = gen.denoise_error(x0, mask, t, noise, text).numpy()
    abar = gen.diffusion.alphas_cumprod[t].double().numpy()[:, None, None]
    x_t = np.sqrt(abar) * x0.double().numpy() + np.sqrt(1 - abar) * noise.double().numpy()
    pred = reference_mdm(state, x_t, t.numpy(), text.double().numpy(), np.array([False, False]))
    sq = ((pred - x0.double().numpy()) ** 2).sum(-1)
    expected = [sq[0, :150].sum() / (150 * FEATS), sq[1, :90].sum() / (90 * FEATS)]
    np.testing.assert_allclose(err, expected, rtol=1e-4)


def test_cosine_schedule_of_50_steps_is_mdms():
    """betas_for_alpha_bar(50, cos((u + 0.008) / 1.008 * pi / 2)^2), max beta 0.999, as MDM's gaussian_diffusion."""
    from sopo_ray.models.generator import build_generator

    gen = build_generator(load_config(None, OFFICIAL), (np.zeros(FEATS), np.ones(FEATS)))
    f = [math.cos((u / 50 + 0.008) / 1.008 * math.pi / 2) ** 2 for u in range(51)]
    betas = [min(1 - f[i + 1] / f[i], 0.999) for i in range(50)]
    np.testing.assert_allclose(gen.diffusion.betas.double().numpy(), betas, rtol=1e-6)


def test_ema_checkpoints_use_the_average_model(released, tmp_path, humanml3d_sample):
    cfg, _, gen, state, _, mean, std = released
    avg = official_state(seed=1)
    torch.save({"model": state, "model_avg": avg}, tmp_path / "model.pt")
    out = import_mdm(cfg, tmp_path / "model.pt", tmp_path / "imported.pt", mean, std, "data-x", "d")
    loaded, _ = load_generator(out)
    torch.testing.assert_close(loaded.state_dict()["denoiser.embed_text.weight"], avg["embed_text.weight"])


@pytest.mark.parametrize("change, message", [
    (lambda s: s.pop("embed_text.bias"), "missing 'embed_text.bias'"),
    (lambda s: s.update({"seqTransEncoder.layers.8.norm1.bias": torch.zeros(D)}), "unexpected 'seqTransEncoder"),
    (lambda s: s.update({"embed_text.weight": torch.zeros(D, 768)}), r"'embed_text.weight' has shape \(512, 768\)"),
    (lambda s: s.update({"sequence_pos_encoder.pe": torch.zeros(5000, 1, D)}), "not MDM's sinusoidal table"),
])
def test_every_key_is_accounted_for(released, tmp_path, change, message):
    cfg, _, _, state, _, mean, std = released
    broken = dict(state)
    change(broken)
    torch.save(broken, tmp_path / "model.pt")
    with pytest.raises(CheckpointError, match=message):
        import_mdm(cfg, tmp_path / "model.pt", tmp_path / "out.pt", mean, std, "d", "d")
    assert not (tmp_path / "out.pt").exists()


def test_args_json_beside_the_file_must_agree(released, tmp_path):
    cfg, source, _, state, _, mean, std = released
    torch.save(state, tmp_path / "model.pt")
    args = {"arch": "trans_enc", "latent_dim": 512, "layers": 8, "diffusion_steps": 50, "noise_schedule": "cosine",
            "dataset": "humanml", "cond_mask_prob": 0.1}
    (tmp_path / "args.json").write_text(json.dumps(args))
    import_mdm(cfg, tmp_path / "model.pt", tmp_path / "ok.pt", mean, std, "d", "d")
    for key, value, fix in [("diffusion_steps", 1000, "diffusion.num_timesteps=1000"),
                            ("arch", "trans_dec", "trans_enc only"), ("mask_frames", True, "model.mask_frames=true")]:
        (tmp_path / "args.json").write_text(json.dumps({**args, key: value}))
        with pytest.raises(ConfigError, match=fix):
            import_mdm(cfg, tmp_path / "model.pt", tmp_path / "bad.pt", mean, std, "d", "d")


def test_unsafe_or_foreign_files_are_refused(released, tmp_path):
    cfg, _, _, _, _, mean, std = released
    torch.save({"args": argparse.Namespace(arch="trans_enc")}, tmp_path / "pickled.pt")
    with pytest.raises(CheckpointError, match="cannot be read safely"):
        import_mdm(cfg, tmp_path / "pickled.pt", tmp_path / "out.pt", mean, std, "d", "d")
    torch.save([1, 2], tmp_path / "list.pt")
    with pytest.raises(CheckpointError, match="not an MDM state dict"):
        import_mdm(cfg, tmp_path / "list.pt", tmp_path / "out.pt", mean, std, "d", "d")
    with pytest.raises(CheckpointError, match="not found; download humanml_enc_512_50steps"):
        import_mdm(cfg, tmp_path / "absent.pt", tmp_path / "out.pt", mean, std, "d", "d")


def test_config_requires_the_official_layout_for_a_released_mdm():
    with pytest.raises(ConfigError, match="invalid combination of config keys .* model.architecture=mdm_official"):
        load_config(None, ["pretrained.mdm=/x/model.pt"])
    with pytest.raises(ConfigError, match="pretrained.tmr needs pretrained.tmr_stats"):
        load_config(None, ["pretrained.tmr=/x/tmr"])
    with pytest.raises(ConfigError, match="pretrained.t2m_evaluator needs pretrained.t2m_stats"):
        load_config(None, ["pretrained.t2m_evaluator=/x/t2m", "pretrained.glove=/x/glove"])
    with pytest.raises(ConfigError, match="data.source humanml3d or kitml"):
        load_config(None, ["pretrained.t2m_evaluator=/t", "pretrained.t2m_stats=/s", "pretrained.glove=/g"])
    with pytest.raises(ConfigError, match="frames_per_token 1"):
        load_config(None, ["model.architecture=mdm_official", "model.frames_per_token=2"])
    assert load_config(None, [*OFFICIAL, "pretrained.mdm=/x/model.pt"]).pretrained.mdm is not None
