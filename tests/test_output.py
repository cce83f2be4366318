"""What an operator reads: output that is whole in a file, a pipe and a terminal; Ray's own lines in the run's log
file; a run's output redirected to a file, read line by line; the package building without warnings."""

from __future__ import annotations

import argparse
import io
import logging
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from rich.console import Console
from rich.table import Table

from sopo_ray.config import load_config
from sopo_ray.console import make_console, print_table, table_width
from sopo_ray.distributed.monitor import LiveView
from sopo_ray.distributed.ray_logs import (
    OUR_PRINTER,
    RAY_PRINTER,
    TOKEN_AUTH_ENABLED,
    TOKEN_AUTH_LOGGER,
    RayOutput,
    quiet_token_auth_notice,
)
from sopo_ray.evaluation.tables import comparison_markdown, comparison_table
from sopo_ray.run import add_run_args, config_overrides

REPO = Path(__file__).resolve().parents[1]
CELL = r"\d+\.\d{3}±\d+\.\d{3}"


def file_console(**kwargs) -> tuple[Console, io.StringIO]:
    out = io.StringIO()
    return make_console(file=out, **kwargs), out


def test_off_a_terminal_a_long_message_stays_on_one_line():
    message = " ".join(f"word{i}" for i in range(60))                   # ~400 characters
    console, out = file_console()
    console.print(message)
    assert out.getvalue() == message + "\n"
    rich_default = io.StringIO()
    Console(file=rich_default).print(message)                           # what rich alone does in a file
    assert rich_default.getvalue().count("\n") > 1


def wide_table(name: str) -> Table:
    table = Table(title="test split")
    table.add_column("Model", no_wrap=True)
    for i in range(10):
        table.add_column(f"metric {i} ↑", justify="right", no_wrap=True)
    table.add_row(name, *(f"{i}.{i}23±0.0{i}5" for i in range(10)))
    return table


@pytest.mark.parametrize("terminal", [False, True])
def test_a_table_wider_than_the_console_keeps_every_cell_whole(terminal):
    name = "runs/sopo-default-20260101-120000/policy.pt"
    out = io.StringIO()
    console = Console(file=out, width=80, force_terminal=terminal, color_system=None)
    print_table(console, wide_table(name))
    text = out.getvalue()
    assert "…" not in text and name in text
    assert all(f"{i}.{i}23±0.0{i}5" in text for i in range(10))
    assert max(len(line) for line in text.splitlines()) == table_width(wide_table(name)) > 80


def test_the_results_table_has_a_row_per_metric_with_the_difference_and_its_ci_and_fits_80_columns():
    rows = {"base": {"R@1": (0.25, 0.012), "FID": (1.5, 0.1), "Reward": (0.725, 0.006)},
            "aligned": {"R@1": (0.27, 0.016), "FID": (1.2, 0.2), "Reward": (0.738, 0.006)}}
    table = comparison_table(rows, "test split")
    console, out = file_console()
    console.print(table)
    lines = {line.split("│")[1].strip(): [c.strip() for c in line.split("│")[2:-1]]
             for line in out.getvalue().splitlines() if line.startswith("│")}
    assert lines == {"R@1 ↑": ["0.250±0.012", "0.270±0.016", "+0.020±0.020"],
                     "FID ↓": ["1.500±0.100", "1.200±0.200", "-0.300±0.224"],
                     "Reward ↑": ["0.725±0.006", "0.738±0.006", "+0.013±0.008"]}
    assert table_width(table) <= 80


def test_the_report_md_table_has_a_row_per_model_and_the_differences_in_the_same_columns():
    rows = {"base": {"R@1": (0.25, 0.012), "FID": (1.5, 0.1)}, "aligned": {"R@1": (0.27, 0.016), "FID": (1.2, 0.2)}}
    lines = comparison_markdown(rows)
    cells = [[c.strip() for c in line.strip("|").split("|")] for line in lines]
    assert len({len(row) for row in cells}) == 1 and set(cells[1]) == {"---"}
    table = {row[0]: dict(zip(cells[0][1:], row[1:], strict=True)) for row in cells[2:]}
    assert table["base"]["R@1 ↑"] == "0.250±0.012" and table["aligned"]["FID ↓"] == "1.200±0.200"
    assert table["Δ aligned-base"]["R@1 ↑"] == "+0.020" and table["Δ aligned-base"]["FID ↓"] == "-0.300"
    assert table["base"]["Reward ↑"] == table["Δ aligned-base"]["Reward ↑"] == "-"


def test_the_progress_line_is_one_complete_line_with_learner_and_pipeline_fields():
    view = LiveView("run", 320, uses_rollouts=True)
    view.step = {"step": 12, "version": 3, "loss/loss": 0.6931, "reward/x_l": 0.4123,
                 "health/learner_idle_frac_total": 0.08}
    view.pipeline = {"queue/size": 5, "queue/capacity": 48, "queue/in_per_s": 16.53, "queue/out_per_s": 2.1,
                     "queue/dropped_stale": 2, "queue/dropped_resume": 1, "health/rollout_idle_frac": 0.08}
    console, out = file_console()
    console.print(view.line(), highlight=False)
    line = out.getvalue()
    assert line.count("\n") == 1
    assert re.fullmatch(r"\[\d+s\] step 12/320 v3 \| loss 0\.693 r\(x\^l\) 0\.412 learner-idle 0\.08 \| queue 5/48 "
                        r"in 16\.53/s out 2\.10/s dropped 3 rollout-idle 0\.08\n", line), line


def test_progress_lines_come_every_10_s_and_once_more_at_the_end_only_with_news():
    view = LiveView("run", 6, uses_rollouts=False)
    t0 = view.started
    assert view.log_line(t0 + 1).startswith("[1s] step 0/6 v0")
    assert view.log_line(t0 + 5) is None                                  # not due yet
    assert view.log_line(t0 + 11).startswith("[11s] step 0/6")          # a heartbeat, same fields
    assert view.log_line(t0 + 12, final=True) is None                   # the last line said it all
    view.step = {"step": 6, "version": 3, "loss/loss": 0.69}
    assert view.log_line(t0 + 13, final=True).startswith("[13s] step 6/6 v3 | loss 0.690")


def batch(name: str, pid: int, *lines: str, **extra) -> dict:
    """A batch of worker lines as Ray's log monitor hands it to the driver's dispatcher."""
    return {"ip": "10.0.0.2", "localhost": "10.0.0.2", "pid": pid, "job": "01000000", "is_err": True,
            "actor_name": name, "task_name": "", "lines": list(lines), **extra}


@pytest.fixture
def ray_printer():
    """Ray's driver-side dispatcher with a recording handler where Ray's own printer sits in a Ray-driving run."""
    from ray._private.ray_logging import global_worker_stdstream_dispatcher as dispatcher

    printed: list[dict] = []
    dispatcher.add_handler(RAY_PRINTER, printed.append)
    try:
        yield dispatcher, printed
    finally:
        dispatcher.remove_handler(RAY_PRINTER)
        dispatcher.remove_handler(OUR_PRINTER)


def test_quiet_ray_output_goes_to_the_log_file_and_each_distinct_line_once_to_the_console(ray_printer, tmp_path):
    dispatcher, ray_printed = ray_printer
    console, out = file_console()
    report = "Reporting training result 1: TrainingReport(checkpoint=Checkpoint(path=/r/step_3), metrics={...})"
    watcher = ("[2026-12-02 13:28:27,600 E 32520 32585] core_worker.cc:2465: Actor with class name: "
               "'PreemptionWatcher' and ID: 'ab13' has constructor arguments in the object store and "
               "max_restarts > 0. If the arguments in the object store go out of scope or are lost, ...")
    with RayOutput(tmp_path / "logs" / "ray.log", console, verbose=False) as output:
        assert [name for name, _ in dispatcher.handlers].count(RAY_PRINTER) == 0
        dispatcher.emit(batch("ReplayQueue", 12, "x.py:468: RayDeprecationWarning: use get_actor_id()", "  call()"))
        dispatcher.emit(batch("PlacementGroupCleaner", 13, "Failed to query actor 0a1b2c state (try 1)."))
        dispatcher.emit(batch("PlacementGroupCleaner", 13, "Failed to query actor 0a1b2c state (try 2)."))
        dispatcher.emit(batch("RayTrainWorker", 14, report, ip="10.0.0.3"))
        dispatcher.emit(batch("TrainController", 15, watcher))
        dispatcher.emit(batch("", "autoscaler", "Resized to 4 CPUs."))
        dispatcher.emit(batch("TrainController", 15, "Exception in thread Monitor:", "Traceback (most recent call "
                              "last):", '  File "a.py", line 3, in run', "    self.run()"))
        dispatcher.emit(batch("TrainController", 15, '  File "b.py", line 9, in get', "    raise ConnectionError(",
                              "ConnectionError: Found multiple active Ray instances"))
    log_path = tmp_path / "logs" / "ray.log"
    assert out.getvalue().splitlines() == [
        "ray ReplayQueue: x.py:468: RayDeprecationWarning: use get_actor_id()", "ray ReplayQueue:   call()",
        "ray PlacementGroupCleaner: Failed to query actor 0a1b2c state (try 1).",
        "ray TrainController: Exception in thread Monitor:",
        f"ray TrainController: ConnectionError: Found multiple active Ray instances  (traceback in {log_path})"]
    logged = log_path.read_text().splitlines()
    assert logged[0].startswith("# ") and "quiet" in logged[0]
    assert [line.split(" ", 1)[1] for line in logged[1:]] == [
        "(ReplayQueue pid=12) x.py:468: RayDeprecationWarning: use get_actor_id()", "(ReplayQueue pid=12)   call()",
        "(PlacementGroupCleaner pid=13) Failed to query actor 0a1b2c state (try 1).",
        "(PlacementGroupCleaner pid=13) Failed to query actor 0a1b2c state (try 2).",
        f"(RayTrainWorker pid=14, ip=10.0.0.3) {report}", f"(TrainController pid=15) {watcher}",
        "(TrainController pid=15) Exception in thread Monitor:",
        "(TrainController pid=15) Traceback (most recent call last):",
        '(TrainController pid=15)   File "a.py", line 3, in run', "(TrainController pid=15)     self.run()",
        '(TrainController pid=15)   File "b.py", line 9, in get', "(TrainController pid=15)     raise ConnectionError(",
        "(TrainController pid=15) ConnectionError: Found multiple active Ray instances"]
    assert (output.lines, output.shown, output.hidden) == (13, 5, 8)   # the watcher notice: logged, hidden
    assert [b["pid"] for b in ray_printed] == ["autoscaler"]            # autoscaler events: Ray's own printer
    names = [name for name, _ in dispatcher.handlers]
    assert names.count(RAY_PRINTER) == 1 and OUR_PRINTER not in names   # Ray's printer is back


def test_verbose_ray_output_is_printed_by_ray_and_still_logged(ray_printer, tmp_path):
    dispatcher, ray_printed = ray_printer
    console, out = file_console()
    with RayOutput(tmp_path / "ray.log", console, verbose=True) as output:
        dispatcher.emit(batch("RayTrainWorker", 14, "Checkpoint successfully created at: /r/step_3"))
    assert out.getvalue() == "" and len(ray_printed) == 1
    assert output.lines == 1 and "Checkpoint successfully created" in (tmp_path / "ray.log").read_text()


def test_rays_token_auth_enabled_notice_is_dropped_and_its_auth_disabled_warning_kept():
    from ray._private.authentication import authentication_token_setup as ray_auth

    auth_logger = logging.getLogger(TOKEN_AUTH_LOGGER)
    assert ray_auth.logger is auth_logger                              # the logger Ray warns through
    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append
    before = list(auth_logger.filters)
    auth_logger.addHandler(handler)
    try:
        ray_auth._warn_token_auth_enabled()                             # as Ray prints it without us
        quiet_token_auth_notice()
        quiet_token_auth_notice()                                       # a second run in the same process
        added = [f for f in auth_logger.filters if f not in before]
        ray_auth._warn_token_auth_enabled()
        ray_auth._warn_token_auth_disabled()
    finally:
        auth_logger.removeHandler(handler)
        auth_logger.filters[:] = before
    messages = [r.getMessage() for r in records]
    assert len(added) == 1 and len(messages) == 2
    assert messages[0].startswith(TOKEN_AUTH_ENABLED) and messages[1].startswith("Token authentication is disabled")


def test_verbose_flag_sets_log_verbose():
    parser = argparse.ArgumentParser()
    add_run_args(parser)
    verbose = parser.parse_args(["--verbose", "--set", "schedule.total_steps=5"])
    assert config_overrides(verbose) == ["schedule.total_steps=5", "log.verbose=true"]
    assert load_config(None, config_overrides(verbose)).log.verbose is True
    assert load_config(None, config_overrides(parser.parse_args([]))).log.verbose is False


def test_the_package_builds_without_warnings(tmp_path):
    out = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-w", str(tmp_path), str(REPO)],
                         capture_output=True, text=True, timeout=300)
    log = out.stdout + out.stderr
    assert out.returncode == 0, log[-3000:]
    assert not re.search(r"BuildBackendWarning|SetuptoolsDeprecationWarning|DEPRECATION", log), log[-3000:]
    assert list(tmp_path.glob("sopo_ray-*.whl"))


@pytest.mark.slow
def test_a_run_redirected_to_a_file_reads_as_a_log(smoke_workdir, tmp_path):
    """`python -m sopo_ray.run --config configs/smoke.yaml > run.log 2>&1` with both trackers on."""
    run_dir = tmp_path / "run"
    log_file = tmp_path / "run.log"
    with tempfile.TemporaryDirectory(prefix="sopo-out-", dir="/tmp") as ray_tmp, open(log_file, "w") as log:
        env = {**os.environ, "RAY_TMPDIR": ray_tmp, "RAY_USAGE_STATS_ENABLED": "0"}
        code = subprocess.run(
            [sys.executable, "-m", "sopo_ray.run", "--config", "configs/smoke.yaml", "--output-dir", str(run_dir),
             "--set", f"workdir={smoke_workdir}", "--set", f"data.root={smoke_workdir}/data",
             "--set", "log.tensorboard=true", "--set", "log.wandb=true"],
            cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT, timeout=900).returncode
    text = log_file.read_text()
    assert code == 0, text[-4000:]
    lines = text.splitlines()
    # Ray's internals are in the run's log file, not in the output.
    assert "\x1b[" not in text and "…" not in text
    assert not any(s in text for s in ("Reporting training result", "Checkpoint successfully created", " pid="))
    ray_log = (run_dir / "logs" / "ray.log").read_text()
    assert "Reporting training result 2: TrainingReport(" in ray_log and "(RayTrainWorker pid=" in ray_log
    # One complete progress line per update, the last one at the end of training.
    progress = [line for line in lines if re.match(r"\[[\dhms]+\] step \d+/6 ", line)]   # [42s], [1m05s]
    assert progress and all(" | queue " in line for line in progress)
    assert re.match(r"\[[\dhms]+\] step 6/6 v\d+ \| loss \d\.\d{3} ", progress[-1])
    # The results table: every metric with both models and the difference, numbers in full.
    # One table per held-out split, the in-distribution one first.
    rows = [line for line in lines if re.match(rf"│ \S+ [↑↓→]\s+│ {CELL} │ {CELL} │\s+[+-]{CELL} │$", line)]
    assert [row.split()[1] for row in rows] == ["R@1", "R@2", "R@3", "FID", "MM-Dist", "Diversity", "Oracle",
                                                "Reward"] * 2
    assert text.index("in-distribution test split") < text.index("compositional split")
    # The summary says where everything is, and every path it names exists.
    summary = lines[lines.index("run summary") + 1:]
    where = {line.split()[0]: line.split()[1] for line in summary if line.split()[0] in
             ("run", "policy", "report", "dashboard", "metrics")}
    assert set(where) == {"run", "policy", "report", "dashboard", "metrics"}
    assert all(Path(path).exists() for path in where.values())
    assert any(f"tensorboard --logdir {run_dir / 'tensorboard'}" in line for line in summary)
    assert any("wandb sync" in line for line in summary)
    assert sum(line.split()[0] in ("test", "compositional", "Oracle", "R@3", "FID") for line in summary) == 8
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run_dir / "tensorboard"))
    events.Reload()
    assert {"loss/loss", "queue/size", "eval/test/aligned/Reward", "eval/test/delta/Reward",
            "eval/compositional/delta/Oracle"} <= set(events.Tags()["scalars"])
    assert any(t.startswith("eval/test/paired_oracle/actions_") and t.endswith("/delta")   # by number of actions
               for t in events.Tags()["scalars"])
    assert [e.step for e in events.Scalars("loss/loss")] == list(range(1, 7))
