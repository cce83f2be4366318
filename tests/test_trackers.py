"""Experiment trackers: what TensorBoard and W&B (offline) hold on disk after a MetricsWriter fed them, read back
with TensorBoard's own event reader and by decoding W&B's transaction log; the `log` config section's bad inputs."""

from __future__ import annotations

import json
import struct
import sys
import time
from pathlib import Path

import pytest

from sopo_ray.config import load_config
from sopo_ray.errors import ConfigError
from sopo_ray.trackers import HPARAM_METRICS, check_available, flat_config, open_trackers, scalars
from sopo_ray.tracking import MetricsWriter


def records_of_a_run(writer: MetricsWriter, steps: range, offset: float = 0.0) -> None:
    """What the driver logs: step records, a pipeline record with a list and a histogram, a run record with text."""
    for step in steps:
        writer.log(step, event="step", version=step // 2, **{"loss/loss": 1.0 / step + offset, "reward/x_l": 0.5,
                                                              "health/staleness": [0, 1]})
    writer.log(steps[-1], event="pipeline", **{"queue/size": 3, "queue/accounting_ok": True,
                                               "health/staleness_hist": {"0": 4}, "rollout/versions": [1, 2]})
    writer.log(steps[-1], event="run", state="done", message="", **{"health/queue_restart": 0})


def tensorboard_run(logdir: Path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(logdir), size_guidance={"scalars": 0, "tensors": 0})
    events.Reload()
    return events


def test_scalars_keep_the_metrics_jsonl_names_and_drop_what_is_not_a_number():
    record = {"step": 3, "time": 1.5, "event": "step", "version": 2, "loss/loss": 0.7, "queue/accounting_ok": True,
              "health/staleness": [0, 1], "state": "done", "loss/nan": None, "loss/inf": float("inf"),
              "requested_rollout_workers": 4}
    assert scalars(record) == {"version": 2.0, "loss/loss": 0.7, "queue/accounting_ok": 1.0}


def test_tensorboard_events_read_back_hold_every_metric_and_the_config(tmp_path):
    cfg = load_config(None, ["log.tensorboard=true", "optimizer.lr=3e-5", "name=tb"])
    with MetricsWriter(tmp_path / "metrics.jsonl", open_trackers(cfg, tmp_path, resume=False)) as writer:
        records_of_a_run(writer, range(1, 5))
    events = tensorboard_run(tmp_path / "tensorboard")
    assert set(events.Tags()["scalars"]) == {"version", "loss/loss", "reward/x_l", "queue/size",
                                             "queue/accounting_ok", "health/queue_restart"}
    assert [(e.step, round(e.value, 6)) for e in events.Scalars("loss/loss")] == [
        (s, round(1.0 / s, 6)) for s in range(1, 5)]
    assert [(e.step, e.value) for e in events.Scalars("queue/size")] == [(4, 3.0)]

    from tensorboard.plugins.hparams import plugin_data_pb2

    content = events.PluginTagToContent("hparams")
    start = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/session_start_info"])
    hparams = start.session_start_info.hparams
    assert hparams["optimizer.lr"].number_value == pytest.approx(3e-5)
    assert hparams["name"].string_value == "tb" and hparams["log.tensorboard"].number_value == 1.0
    experiment = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/experiment"]).experiment
    assert [m.name.tag for m in experiment.metric_infos] == list(HPARAM_METRICS)
    text = events.Tensors("config/text_summary")[0].tensor_proto.string_val[0].decode()
    assert "lr: 3.0e-05" in text


def test_a_resumed_run_continues_its_tensorboard_run_without_the_steps_it_repeats(tmp_path):
    cfg = load_config(None, ["log.tensorboard=true"])
    with MetricsWriter(tmp_path / "metrics.jsonl", open_trackers(cfg, tmp_path, resume=False)) as writer:
        records_of_a_run(writer, range(1, 7))                    # stopped after step 6, checkpoint at step 3
    with MetricsWriter(tmp_path / "metrics.jsonl", open_trackers(cfg, tmp_path, resume=True,
                                                                 start_step=3)) as writer:
        records_of_a_run(writer, range(4, 9), offset=10.0)       # steps 4.. again, from the checkpoint
    steps = [(e.step, e.value > 10) for e in tensorboard_run(tmp_path / "tensorboard").Scalars("loss/loss")]
    assert steps == [(1, False), (2, False), (3, False), (4, True), (5, True), (6, True), (7, True), (8, True)]


def wandb_records(run_file: Path) -> list:
    """Decode a .wandb transaction log: a 7-byte header, then records in 32 KiB blocks (LevelDB log format:
    crc32 (4 bytes), length (2), type (1: full, 2: first, 3: middle, 4: last)) holding wandb Record protobufs."""
    from wandb.proto import wandb_internal_pb2

    data = run_file.read_bytes()
    assert data[:4] == b":W&B"
    pos, block, pending, chunks = 7, 32768, b"", []
    while pos + 7 <= len(data):
        if block - pos % block < 7:                              # a block's zero-padded tail
            pos += block - pos % block
            continue
        _, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        chunk, pos = data[pos + 7:pos + 7 + length], pos + 7 + length
        if kind == 1:
            chunks.append(chunk)
        elif kind == 2:
            pending = chunk
        elif kind == 3:
            pending += chunk
        elif kind == 4:
            chunks.append(pending + chunk)
    return [wandb_internal_pb2.Record.FromString(c) for c in chunks]


def finished_wandb_records(run_file: Path, timeout_s: float = 30.0) -> list:
    """The run's records once its last one (`exit`) is on disk: wandb's service process writes the file
    asynchronously and may still be at it when `finish()` returns."""
    deadline = time.time() + timeout_s
    while True:
        records = wandb_records(run_file)
        if any(r.WhichOneof("record_type") == "exit" for r in records) or time.time() > deadline:
            return records
        time.sleep(0.1)


def wandb_history(run_file: Path) -> list[dict]:
    rows = []
    for record in finished_wandb_records(run_file):
        if record.WhichOneof("record_type") == "history":
            rows.append({item.key or "/".join(item.nested_key): json.loads(item.value_json)
                         for item in record.history.item})
    return rows


def test_wandb_offline_run_holds_the_metrics_against_the_learner_step_and_the_config(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_SILENT", "true")
    cfg = load_config(None, ["log.wandb=true", "optimizer.lr=3e-5"])
    trackers = open_trackers(cfg, tmp_path, resume=False)
    with MetricsWriter(tmp_path / "metrics.jsonl", trackers) as writer:
        records_of_a_run(writer, range(1, 4))
    assert "wandb sync" in trackers[0].where()
    run_files = list((tmp_path / "wandb").glob("offline-run-*/run-*.wandb"))
    assert len(run_files) == 1
    history = wandb_history(run_files[0])
    steps = [(row["step"], row["loss/loss"]) for row in history if "loss/loss" in row]
    assert steps == [(s, pytest.approx(1.0 / s)) for s in range(1, 4)]
    assert [row["queue/size"] for row in history if "queue/size" in row] == [3.0]
    assert not any("health/staleness" in row or "rollout/versions" in row for row in history)
    runs = [r.run for r in finished_wandb_records(run_files[0]) if r.WhichOneof("record_type") == "run"]
    config = {item.key: json.loads(item.value_json) for item in runs[0].config.update}
    assert config["optimizer"]["lr"] == pytest.approx(3e-5) and config["log"]["wandb_mode"] == "offline"
    assert runs[0].run_id == (tmp_path / "wandb" / "run_id").read_text()

    resumed = open_trackers(cfg, tmp_path, resume=True, start_step=2)
    resumed[0].close()
    assert resumed[0].run.id == runs[0].run_id                     # --resume continues the same W&B run


def test_flat_config_gives_one_dotted_key_per_field():
    flat = flat_config({"name": "x", "output_dir": None, "optimizer": {"lr": 1e-4}, "log": {"live_view": True},
                        "experiment": {"bases": ["mdm"], "ablations": {"objective.k": [2, 4]}}})
    assert flat == {"name": "x", "optimizer.lr": 1e-4, "log.live_view": True, "experiment.bases": '["mdm"]',
                    "experiment.ablations": '{"objective.k": [2, 4]}'}


@pytest.mark.parametrize("flag", ["tensorboard", "wandb"])
def test_a_tracker_whose_package_is_missing_is_refused_before_anything_is_written(flag, tmp_path, monkeypatch):
    from sopo_ray.distributed.driver import Driver

    monkeypatch.setitem(sys.modules, flag, None)                 # what `import <flag>` sees when it is not installed
    cfg = load_config(None, [f"log.{flag}=true", f"workdir={tmp_path / 'artifacts'}"])
    with pytest.raises(ConfigError, match=rf"log\.{flag} is on but the {flag} package is not installed; "
                                          rf"pip install 'sopo_ray\[{flag}\]' or set log\.{flag}=false"):
        Driver(cfg, tmp_path / "run").run()
    assert not (tmp_path / "run").exists() and not (tmp_path / "artifacts").exists()
    check_available(load_config(None, [f"log.{flag}=false"]).log)    # off: no package needed


@pytest.mark.parametrize("override, message", [
    ("log.wandb_mode=cloud", "log.wandb_mode"),
    ("log.wandb_project=' '", "wandb_project must not be empty"),
    ("log.verbos=true", "did you mean 'log.verbose'"),
    ("log.tensorboard=maybe", "log.tensorboard"),
])
def test_bad_log_settings_are_one_line_errors(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config(None, [override])
