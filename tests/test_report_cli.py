"""`sopo report RUN_DIR` draws the pipeline dashboard from a run's metrics.jsonl."""

from PIL import Image

from sopo_ray.cli import main
from sopo_ray.tracking import MetricsWriter


def _write_run(run_dir, steps: int = 30) -> None:
    with MetricsWriter(run_dir / "metrics.jsonl") as writer:
        for step in range(1, steps + 1):
            writer.log(step, event="step", **{"reward/best": 0.8, "reward/mean": 0.7 + step / 1000,
                                             "reward/x_l": 0.6, "loss/loss": 0.69 - step / 1000,
                                             "loss/frac_below_tau": 0.2, "health/staleness": [0, 1, 1],
                                             "health/learner_idle_frac": 0.5})
            writer.log(step, event="pipeline", **{"health/rollout_idle_frac": 0.1, "queue/size": step % 5,
                                                 "queue/inflight": 2, "queue/capacity": 8,
                                                 "queue/in_per_s": 3.0, "queue/out_per_s": 2.5})


def test_report_writes_a_dashboard_png(tmp_path, capsys):
    _write_run(tmp_path)
    assert main(["report", str(tmp_path), "--out", str(tmp_path / "d.png")]) == 0
    assert "wrote" in capsys.readouterr().out
    with Image.open(tmp_path / "d.png") as image:
        width, height = image.size
        colours = image.convert("RGB").getcolors(maxcolors=1 << 20)
    assert width > 800 and height > 400
    assert colours is None or len(colours) > 50  # six drawn panels, not a blank canvas


def test_report_of_a_folder_without_metrics_is_a_one_line_error(tmp_path, capsys):
    assert main(["report", str(tmp_path / "nope")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "metrics.jsonl" in err and "\n" not in err
    assert not (tmp_path / "nope").exists()
