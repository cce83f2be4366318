"""RunStorage finds a run's newest complete learner checkpoint the same way in a local folder and behind a URI
(file:// here; s3:// and gs:// go through the same pyarrow filesystem calls), and local_copy reads it back."""

from __future__ import annotations

from pathlib import Path

import pytest

from sopo_ray.config import load_config
from sopo_ray.distributed.storage import RunStorage, local_copy


def make_run(root: Path) -> None:
    """learner-1 reached step 6 (its step-6 folder cut off before learner.pt), learner-2 resumed from step 3."""
    for session, step, complete in (("learner-1", 3, True), ("learner-1", 6, False), ("learner-2", 3, True),
                                    ("learner-2", 5, True)):
        folder = root / session / f"step_{step:08d}"
        folder.mkdir(parents=True)
        (folder / "pipeline.pt").write_bytes(b"pipeline")
        if complete:
            (folder / "learner.pt").write_bytes(f"{session}/{step}".encode())
    (root / "learner-2" / "step_notanumber").mkdir()
    (root / "config.yaml").write_text("name: x\n")


@pytest.mark.parametrize("as_uri", [False, True], ids=["path", "file-uri"])
def test_latest_complete_checkpoint_and_local_copy(tmp_path, as_uri):
    make_run(tmp_path / "run")
    root = f"file://{tmp_path}/run" if as_uri else str(tmp_path / "run")
    storage = RunStorage(root)
    assert [step for step, _ in storage.checkpoints("learner.pt")] == [3, 5]
    folder = storage.latest("learner.pt")
    assert folder == f"{storage.root}/learner-2/step_00000005"
    assert storage.checkpoints("learner.pt")[0][1].endswith("learner-2/step_00000003")   # the later session wins
    assert storage.new_session() == "learner-3"
    with local_copy(folder) as local:
        assert (local / "learner.pt").read_bytes() == b"learner-2/5"
        copied = local
    assert copied.exists() != as_uri                # a download is removed afterwards, a local folder stays


def test_empty_or_missing_root(tmp_path):
    storage = RunStorage(f"file://{tmp_path}/nothing-here")
    assert storage.latest("learner.pt") is None and storage.new_session() == "learner-1"


def test_storage_path_holds_one_folder_per_run(tmp_path):
    run_dir = tmp_path / "runs" / "sopo-20261126-120000"
    assert RunStorage.for_run(load_config(None), run_dir).root == str(run_dir.resolve())
    uri = load_config(None, ["cluster.storage_path=s3://bucket/sopo-runs/"])
    assert RunStorage.for_run(uri, run_dir).root == "s3://bucket/sopo-runs/sopo-20261126-120000"
    shared = load_config(None, [f"cluster.storage_path={tmp_path}/shared"])
    assert RunStorage.for_run(shared, run_dir).root == str(tmp_path / "shared" / "sopo-20261126-120000")
