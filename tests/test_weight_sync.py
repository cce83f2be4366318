"""Weight sync publishes only what trains (`schedule.publish_weights: trainable`): a version holds the policy's
trainable parameters, and a rollout worker that loads it over the base model it started from holds the learner's
whole model, every entry (an MLD's frozen VAE, the normalisation buffers) included."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
import ray
import torch

from sopo_ray import artifacts
from sopo_ray.algorithm import PreferenceBatch, build_models, train_on_batch
from sopo_ray.config import config_to_dict, load_config
from sopo_ray.distributed.resume import ResumePoint, restore_services
from sopo_ray.distributed.rollout import RolloutWorker
from sopo_ray.distributed.weights import (
    WeightStore,
    fetch_weights,
    load_numpy_state,
    publish_keys,
    state_to_numpy,
    trainable_keys,
)
from sopo_ray.errors import ClusterError
from sopo_ray.models.generator import build_generator, generator_from_payload

REPO = Path(__file__).resolve().parents[1]
torch.set_num_threads(1)
TINY = ["data.max_frames=24", "data.min_frames=8", "model.latent_dim=32", "model.num_layers=1", "model.num_heads=2",
        "model.ff_dim=64", "model.frames_per_token=1", "diffusion.num_timesteps=20", "diffusion.sample_steps=5",
        "diffusion.rollout_sample_steps=2", "optimizer.lr=1e-3",
        "optimizer.warmup_steps=0", "optimizer.weight_decay=0.1"]
MLD = ["model.kind=mld", "model.vae_latent_tokens=2", "model.vae_latent_dim=16", "model.vae_num_layers=1"]
KINDS = {"mdm": [], "mld": MLD}


def base_payload(cfg, max_frames: int | None = None) -> dict:
    """A checkpoint payload of a fresh generator for `cfg` (what artifacts.resolve hands the trainer)."""
    rng = np.random.default_rng(0)
    gen = build_generator(cfg, (rng.normal(size=263).astype(np.float32), rng.uniform(0.5, 2, 263)))
    return {"config": config_to_dict(cfg), "kind": cfg.model.kind,
            "state": {k: v.detach().clone() for k, v in gen.state_dict().items()}}


def one_step(cfg, payload: dict):
    """A learner's models after one real SoPo step (AdamW with weight decay) on a small batch."""
    models = build_models(cfg, payload)
    g = torch.Generator().manual_seed(1)
    t = cfg.data.max_frames
    batch = PreferenceBatch(
        captions=["a person walks forward", "someone jumps"], x_w=torch.randn(2, t, 263, generator=g),
        len_w=torch.tensor([t, t - 4]), x_l=torch.randn(2, t, 263, generator=g), len_l=torch.tensor([t, t - 4]),
        reward_l=torch.tensor([0.2, 0.4]), sims_w=torch.rand(2, 2, generator=g), staleness=[0, 0], group_metrics={})
    applied, _ = train_on_batch(cfg, 0, models.model, models.policy, models.reference, models.optimizer,
                                models.params, batch, torch.Generator().manual_seed(2), "cpu", 0.5, {})
    assert applied
    return models


def assert_same_model(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> None:
    assert a.keys() == b.keys()
    for name in a:
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)


@pytest.mark.parametrize("kind", KINDS)
def test_a_version_holds_exactly_the_denoisers_parameters(kind):
    cfg = load_config(None, TINY + KINDS[kind])
    payload = base_payload(cfg)
    gen = generator_from_payload(payload)
    keys = publish_keys("trainable", payload)
    assert keys == [f"denoiser.{n}" for n, _ in gen.denoiser.named_parameters()] == trainable_keys(gen)
    assert publish_keys("full", payload) is None
    full, published = state_to_numpy(gen), state_to_numpy(gen, keys)
    assert set(published) < set(full) and {"mean", "std"} <= set(full) - set(published)
    if kind == "mld":   # the frozen VAE stays home: most of an MLD's bytes
        assert any(k.startswith("latent.") for k in full) and not any(k.startswith("latent.") for k in published)
        assert sum(a.nbytes for a in published.values()) < 0.8 * sum(a.nbytes for a in full.values())


@pytest.mark.parametrize("kind", KINDS)
def test_a_version_loaded_over_the_base_model_is_the_learners_whole_model(kind):
    cfg = load_config(None, TINY + KINDS[kind])
    payload = base_payload(cfg)
    models = one_step(cfg, payload)
    learner = state_to_numpy(models.policy)
    worker = generator_from_payload(payload)
    keys = publish_keys("trainable", payload)
    changed = [k for k in keys if not np.array_equal(state_to_numpy(worker)[k], learner[k])]
    assert len(changed) > len(keys) // 2                  # the step moved the denoiser: the test can fail
    load_numpy_state(worker, state_to_numpy(models.policy, keys))
    assert_same_model(state_to_numpy(worker), learner)
    reference = generator_from_payload(payload)
    load_numpy_state(reference, state_to_numpy(models.policy))     # a full version (schedule.publish_weights=full)
    assert_same_model(state_to_numpy(reference), learner)


@pytest.mark.parametrize("bad", ["unknown", "shape", "one_good_one_bad"])
def test_weights_that_do_not_fit_the_policy_are_refused_and_nothing_is_copied(bad):
    cfg = load_config(None, TINY)
    payload = base_payload(cfg)
    gen = generator_from_payload(payload)
    before = copy.deepcopy(state_to_numpy(gen))
    name = trainable_keys(gen)[0]
    good = {name: np.zeros_like(before[name])}
    state = {"unknown": {"denoiser.no_such_weight": np.zeros(3, np.float32)},
             "shape": {name: np.zeros((*before[name].shape, 2), np.float32)},
             "one_good_one_bad": {**good, "denoiser.no_such_weight": np.zeros(3, np.float32)}}[bad]
    with pytest.raises(ClusterError, match="do not fit the policy"):
        load_numpy_state(gen, state)
    assert_same_model(state_to_numpy(gen), before)


@pytest.mark.ray
@pytest.mark.parametrize("kind", KINDS)
def test_rollout_workers_get_the_learners_whole_model_through_the_store(ray_cluster, smoke_workdir, kind):
    """Version 0 as the driver publishes it, version 1 as a learner does; a worker that was there before and one
    started after it (a replacement) both end with the learner's model; an exact older version is the base."""
    class InspectableWorker(RolloutWorker):
        """A real rollout worker that can show its policy's weights (defined here: Ray pickles it by value)."""

        def policy_state(self) -> dict[str, np.ndarray]:
            return state_to_numpy(self.policy)

    cfg = load_config(REPO / "configs" / "smoke.yaml", [f"workdir={smoke_workdir}", f"data.root={smoke_workdir}/data"])
    art = artifacts.resolve(cfg, need_evaluator=False)
    model_cfg = load_config(REPO / "configs" / "smoke.yaml",
                            [f"workdir={smoke_workdir}", f"data.root={smoke_workdir}/data", *KINDS[kind]])
    payload = art.base_payload if kind == "mdm" else base_payload(model_cfg)
    keys = publish_keys(cfg.schedule.publish_weights, payload)
    store = ray.remote(WeightStore).options(num_cpus=0).remote(4)
    restore_services(ResumePoint(), payload["state"], store, None, keys)

    def worker(name: str):
        return ray.remote(InspectableWorker).options(num_cpus=0).remote(
            name, cfg, payload, art.reward_payload, art.train, None, store, None, False)

    early = worker("early")
    ray.get(early.sync_weights.remote(None))
    models = one_step(model_cfg, payload)
    ray.get(store.publish.remote(1, 1, state_to_numpy(models.policy, keys)))
    assert list(fetch_weights(store, 1, 30.0, "test")[1]) == keys              # the store holds trainables only
    late = worker("late")
    learner = state_to_numpy(models.policy)
    for handle in (early, late):
        ray.get(handle.sync_weights.remote(None))
        assert_same_model(ray.get(handle.policy_state.remote()), learner)
    ray.get(early.sync_weights.remote(0))                                         # deterministic mode: exactly v0
    assert_same_model(ray.get(early.policy_state.remote()), state_to_numpy(payload["state"]))
    for handle in (early, late, store):
        ray.kill(handle)
