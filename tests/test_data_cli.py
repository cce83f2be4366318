"""`sopo data build` and `sopo data show` run through the real CLI entry point."""

from __future__ import annotations

import json

from PIL import Image

from sopo_ray.cli import main


def test_data_build_writes_the_dataset_folder(tmp_path, capsys):
    root = tmp_path / "data"
    assert main(["data", "build", "--set", f"data.root={root}", "--set", "data.max_frames=60", "--size", "12"]) == 0
    out = capsys.readouterr().out
    assert "train" in out and "data_id synthetic-" in out
    meta = json.loads((root / "meta.json").read_text())
    assert sum(meta["counts"].values()) == 12 and meta["config"]["size"] == 12
    assert {p.name for p in root.iterdir()} == {"train.parquet", "val.parquet", "test.parquet",
                                                "compositional.parquet", "mean.npy", "std.npy", "meta.json"}


def test_data_show_renders_samples(tiny_dataset, tmp_path, capsys):
    out = tmp_path / "samples.png"
    settings = [f"data.root={tiny_dataset.root}", f"data.size={tiny_dataset.size}",
                f"data.max_frames={tiny_dataset.max_frames}"]
    args = ["data", "show", "--split", "train", "--num", "2", "--seed", "3", "--out", str(out)]
    for item in settings:
        args += ["--set", item]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert str(out) in printed and "1.00" in printed  # the oracle agrees with the shown captions
    with Image.open(out) as image:
        assert image.width > 400 and image.height > 200


def test_data_show_reports_user_errors(tmp_path, capsys):
    code = main(["data", "show", "--set", f"data.root={tmp_path / 'missing'}", "--set", "data.source=humanml3d",
                 "--out", str(tmp_path / "x.gif")])
    assert code == 2
    assert "not found" in capsys.readouterr().err
    assert main(["data", "show", "--out", str(tmp_path / "x.mp4")]) == 2
