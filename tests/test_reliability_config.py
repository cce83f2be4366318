"""Config validation as a family, over every key of every section (found by introspection, so a key added later
is covered): every number key has a range, every float refuses NaN/inf, every range refuses the first value past
it, every seed refuses values numpy/torch cannot take, and the cross-field checks refuse what the fields alone
allow. Each refusal is the one-line ConfigError naming the key (tests/test_reliability_inputs.py runs a few of
them through the CLI)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import typing
from collections.abc import Iterator

import annotated_types as at
import pytest
from pydantic import BaseModel
from pydantic.fields import FieldInfo

from sopo_ray.config import SEED_LIMIT, Config, load_config
from sopo_ray.errors import ConfigError

VALIDATED = {"objective.k": ("1", "k must be >= 2"), "objective.tau": ("1.5", "[0, 1]")}
"""Number keys whose range a validator with a tailored message checks, with a value it refuses."""


def number_keys() -> Iterator[tuple[str, FieldInfo, type]]:
    def walk(model: type[BaseModel], prefix: str) -> Iterator[tuple[str, FieldInfo, type]]:
        for name, field in model.model_fields.items():
            if isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel):
                yield from walk(field.annotation, f"{prefix}{name}.")
                continue
            kinds = [t for t in (typing.get_args(field.annotation) or (field.annotation,)) if t in (int, float)]
            if kinds:
                yield f"{prefix}{name}", field, kinds[0]
    yield from walk(Config, "")


KEYS = list(number_keys())


def refuses(item: str, *fragments: str) -> str:
    with pytest.raises(ConfigError) as err:
        load_config(None, [item])
    message = str(err.value)
    assert "\n" not in message and all(f in message for f in fragments), message
    return message


def test_every_number_key_has_a_range():
    unbounded = [key for key, field, _ in KEYS
                 if key not in VALIDATED and not any(isinstance(m, at.Ge | at.Gt | at.Le | at.Lt)
                                                     for m in field.metadata)]
    assert not unbounded, f"give these keys a range (Annotated[..., Field(ge=...)]) on their field line: {unbounded}"
    for key, (value, fragment) in VALIDATED.items():
        refuses(f"{key}={value}", f"'{key}'", fragment)


@pytest.mark.parametrize("key", [key for key, _, kind in KEYS if kind is float])
def test_every_float_key_refuses_nan_and_inf(key):
    for value in ("nan", ".inf", "-.inf"):
        refuses(f"{key}={value}", f"'{key}'", "finite number")


@pytest.mark.parametrize("key,field", [(key, field) for key, field, _ in KEYS if key not in VALIDATED])
def test_every_range_refuses_the_first_value_past_it(key, field):
    kind = int if field.annotation is int or typing.get_args(field.annotation)[:1] == (int,) else float
    step = 1 if kind is int else 1e-3
    for bound in field.metadata:
        past = {at.Ge: lambda b: b.ge - step, at.Gt: lambda b: b.gt, at.Le: lambda b: b.le + step,
                at.Lt: lambda b: b.lt}.get(type(bound))
        if past is not None:
            refuses(f"{key}={past(bound)}", f"'{key}'")


@pytest.mark.parametrize("key", [key for key, field, _ in KEYS if key.split(".")[-1] == "seed"])
def test_every_seed_refuses_what_numpy_and_torch_cannot_take(key):
    refuses(f"{key}=-1", f"'{key}'")
    refuses(f"{key}={SEED_LIMIT}", f"'{key}'")
    load_config(None, [f"{key}={SEED_LIMIT - 1}"])


@pytest.mark.parametrize("items,fragment", [
    (["diffusion.num_timesteps=20"], "sample_steps (50) must be <= num_timesteps (20)"),
    (["diffusion.rollout_sample_steps=60"], "rollout_sample_steps (60) must be <= num_timesteps (50)"),
    (["data.min_frames=100", "data.max_frames=50"], "min_frames <= max_frames"),
    (["model.num_heads=3"], "divisible by num_heads (3)"),
    (["reward.num_heads=5"], "divisible by num_heads (5)"),
    (["schedule.batch_size=10", "cluster.num_learners=3"], "divisible by cluster.num_learners 3"),
    (["evaluator.r_precision_pool=200"], "r_precision_pool <= num_captions"),
    (["cluster.rollout_cpus=1.5"], "a fraction in [0, 1] or a whole number"),
])
def test_cross_field_checks_refuse_what_the_fields_alone_allow(items, fragment):
    with pytest.raises(ConfigError) as err:
        load_config(None, items)
    assert fragment in str(err.value) and "\n" not in str(err.value)


POLL_PROBE = ("import json, sys; from sopo_ray.config import load_config; "
              "from sopo_ray.distributed.learner_group import train_poll_env; "
              "print(json.dumps(train_poll_env(load_config('configs/smoke.yaml', sys.argv[1:]))))")


@pytest.mark.parametrize(("env", "overrides", "expected"), [
    (None, [], "0.5"), (None, ["faults.learner_poll_s=3"], "3.0"), ("0.2", ["faults.learner_poll_s=3"], "0.2")],
    ids=["default", "config", "environment-wins"])
def test_ray_train_health_check_interval_comes_from_the_config_unless_the_environment_sets_it(env, overrides,
                                                                                               expected):
    environ = {k: v for k, v in os.environ.items() if k != "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S"}
    if env is not None:
        environ["RAY_TRAIN_HEALTH_CHECK_INTERVAL_S"] = env
    out = subprocess.run([sys.executable, "-c", POLL_PROBE, *overrides], env=environ, capture_output=True, text=True,
                         check=True, timeout=120)
    assert json.loads(out.stdout.strip().splitlines()[-1]) == {"RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": expected}

