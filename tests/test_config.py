import re
from pathlib import Path

import pytest
from pydantic import BaseModel

from sopo_ray.config import Config, load_config, with_overrides
from sopo_ray.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]


def test_defaults_and_every_field_documented():
    cfg = Config()
    assert cfg.objective.k == 2 and cfg.objective.tau == 0.45
    sections = [Config, *(type(getattr(cfg, name)) for name in Config.model_fields
                          if isinstance(getattr(cfg, name), BaseModel))]
    assert len(sections) > 5
    for section in sections:
        for name, field in section.model_fields.items():
            if isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel):
                continue
            assert field.description, f"{section.__name__}.{name} has no docstring"


def test_yaml_and_set_override(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("schedule:\n  total_steps: 7\nobjective:\n  name: sft\n")
    cfg = load_config(path, ["schedule.total_steps=9", "objective.tau=0.3"])
    assert cfg.schedule.total_steps == 9
    assert cfg.objective.name == "sft" and cfg.objective.tau == 0.3


def test_unknown_key_names_key_file_and_allowed(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("schedule:\n  totl_steps: 7\n")
    with pytest.raises(ConfigError) as err:
        load_config(path)
    msg = str(err.value)
    assert "schedule.totl_steps" in msg and str(path) in msg and "total_steps" in msg
    assert "\n" not in msg


MOVED = {"lr": "optimizer.lr", "warmup_steps": "optimizer.warmup_steps", "grad_clip": "optimizer.grad_clip",
         "weight_decay": "optimizer.weight_decay", "sync_timeout_s": "faults.sync_timeout_s",
         "max_nonfinite_in_row": "faults.max_nonfinite_in_row",
         "max_worker_replacements": "faults.max_worker_replacements",
         "max_learner_failures": "faults.max_learner_failures", "checkpoint_interval": "checkpoint.interval",
         "checkpoints_to_keep": "checkpoint.keep", "keep_queue_on_resume": "checkpoint.keep_queue_on_resume",
         "num_rollout_workers": "cluster.num_rollout_workers", "num_learners": "cluster.num_learners",
         "offline_pairs": "objective.offline_pairs", "live_view": "log.live_view", "final_eval": "log.final_eval"}
"""Keys that left the schedule section for the section of their concern."""


@pytest.mark.parametrize("old,new", sorted(MOVED.items()))
def test_keys_that_left_the_schedule_section_are_unknown_there(old, new, tmp_path):
    """A config written for the 24-key schedule section fails like any unknown key (YAML and --set alike), and the
    key's new home takes the value."""
    value = load_config(None, [f"{new}=1"])
    path = tmp_path / "old.yaml"
    path.write_text(f"schedule:\n  {old}: 1\n")
    for args in ((path, None), (None, [f"schedule.{old}=1"])):
        with pytest.raises(ConfigError) as err:
            load_config(*args)
        msg = str(err.value)
        assert f"unknown config key 'schedule.{old}'" in msg and "allowed keys here: batch_size, max_staleness" in msg
    section, key = new.split(".")
    assert getattr(getattr(value, section), key) == 1


def test_wrong_type_and_literal_errors():
    with pytest.raises(ConfigError, match="schedule.total_steps"):
        load_config(None, ["schedule.total_steps=many"])
    with pytest.raises(ConfigError, match="'sopo', 'online_dpo', 'offline_dpo' or 'sft'"):
        load_config(None, ["objective.name=ppo"])


@pytest.mark.parametrize("item,fragment", [("objective.k=1", "k must be >= 2"),
                                           ("objective.tau=1.5", "reward range"),
                                           ("schedule.sync_interval=0", "sync_interval")])
def test_cross_field_checks(item, fragment):
    with pytest.raises(ConfigError, match=fragment):
        load_config(None, [item])


def test_every_shipped_config_loads():
    files = sorted((REPO / "configs").glob("*.yaml"))
    assert files, "configs/ holds no YAML"
    for path in files:
        load_config(path)


def test_with_overrides_is_a_validated_copy():
    cfg = Config()
    new = with_overrides(cfg, ["schedule.max_staleness=3"])
    assert new.schedule.max_staleness == 3 and cfg.schedule.max_staleness == 1
    with pytest.raises(ConfigError):
        with_overrides(cfg, ["nope=1"])


def test_a_config_extends_another_section_by_section(tmp_path):
    (tmp_path / "base.yaml").write_text("name: base\nschedule:\n  total_steps: 7\noptimizer:\n  lr: 0.002\n"
                                        "objective:\n  k: 3\n")
    (tmp_path / "mid.yaml").write_text("extends: base.yaml\noptimizer:\n  lr: 0.003\n")
    (tmp_path / "top.yaml").write_text("extends: mid.yaml\nname: top\n")
    cfg = load_config(tmp_path / "top.yaml", ["objective.k=5"])
    assert cfg.name == "top" and cfg.schedule.total_steps == 7 and cfg.optimizer.lr == 0.003
    assert cfg.objective.k == 5                                       # --set still wins
    shipped = load_config(REPO / "configs" / "compare_smoke.yaml")
    smoke = load_config(REPO / "configs" / "smoke.yaml")
    assert shipped.model == smoke.model and shipped.schedule.total_steps == 4


@pytest.mark.parametrize(("text", "message"), [
    ("extends: missing.yaml\n", "missing.yaml (extended by"),
    ("extends: loop.yaml\n", "extends itself"),
    ("extends: [a.yaml, b.yaml]\n", "must name one YAML file"),
])
def test_bad_extends_are_one_line_errors(tmp_path, text, message):
    (tmp_path / "loop.yaml").write_text(text)
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_config(tmp_path / "loop.yaml")
