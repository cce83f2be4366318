"""`RunStorage`: where a run's learner checkpoints live, on a local disk or in cloud storage.

Ray Train writes each learner checkpoint to `<root>/learner-<session>/step_<step>/` (`RunConfig(storage_path=root,
name=session)`), one session per start of the run (the first start and every `--resume`). The root is the run
directory, or `cluster.storage_path/<run directory name>` when the cluster sets a shared location (an `s3://` or
`gs://` URI, or a shared filesystem path), so several runs can share one bucket without mixing their checkpoints.

Reading goes through pyarrow's filesystems (what Ray Train itself uses), so finding the newest checkpoint and
reading its files works the same for a local folder and a bucket: `latest()` names the folder, `local_copy(folder)`
yields a local directory holding its files (the folder itself, or a temporary download).
"""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pyarrow.fs as pafs

from sopo_ray.config import Config

LEARNER_SESSION = "learner-"
STEP_DIR = "step_"


def _is_uri(root: str) -> bool:
    return "://" in root


class RunStorage:
    """The learner checkpoints of one run under `root` (a local path or a URI such as s3://bucket/runs/name)."""

    def __init__(self, root: str | Path) -> None:
        root = str(root)
        self.root = root if _is_uri(root) else str(Path(root).resolve())
        self._fs: tuple[pafs.FileSystem, str] | None = None

    def _open(self) -> tuple[pafs.FileSystem, str]:
        """(filesystem, path inside it) of `root`, opened on first use (for a bucket that is a network call)."""
        if self._fs is None:
            self._fs = pafs.FileSystem.from_uri(self.root)
        return self._fs

    @property
    def fs(self) -> pafs.FileSystem:
        """The filesystem `root` lives on."""
        return self._open()[0]

    @property
    def path(self) -> str:
        """`root` as a path inside `fs`."""
        return self._open()[1]

    @classmethod
    def for_run(cls, cfg: Config, run_dir: Path) -> RunStorage:
        """`cluster.storage_path/<run dir name>` when set, else the run directory itself."""
        base = cfg.cluster.storage_path
        if not base:
            return cls(run_dir)
        return cls(f"{base.rstrip('/')}/{Path(run_dir).name}" if _is_uri(base) else Path(base) / Path(run_dir).name)

    def _children(self, path: str) -> list[pafs.FileInfo]:
        infos = self.fs.get_file_info(pafs.FileSelector(path, allow_not_found=True))
        return [i for i in infos if i.type == pafs.FileType.Directory]

    def new_session(self) -> str:
        """Name for the next learner session (`learner-1`, `learner-2`, ...)."""
        sessions = [i for i in self._children(self.path) if i.base_name.startswith(LEARNER_SESSION)]
        return f"{LEARNER_SESSION}{len(sessions) + 1}"

    def checkpoints(self, marker: str) -> list[tuple[int, str]]:
        """(step, folder) of every checkpoint folder holding the file `marker`, oldest first; later sessions win a
        tie (a resumed run re-writing a step it had reached before a failure)."""
        found: dict[int, tuple[int, str]] = {}
        sessions = [i for i in self._children(self.path) if i.base_name.startswith(LEARNER_SESSION)]
        for session in sorted(sessions, key=lambda i: int(i.base_name[len(LEARNER_SESSION):] or 0)):
            for folder in self._children(session.path):
                name = folder.base_name
                if not name.startswith(STEP_DIR) or not name[len(STEP_DIR):].isdigit():
                    continue
                if self.fs.get_file_info(f"{folder.path}/{marker}").type != pafs.FileType.File:
                    continue   # a checkpoint still being written (or cut off) is not one
                step = int(name[len(STEP_DIR):])
                found[step] = (step, f"{self.root}/{session.base_name}/{name}")
        return [found[s] for s in sorted(found)]

    def latest(self, marker: str) -> str | None:
        """The newest complete checkpoint folder (highest step; among equal steps the latest session), or None."""
        points = self.checkpoints(marker)
        return points[-1][1] if points else None


@contextlib.contextmanager
def local_copy(folder: str | Path) -> Iterator[Path]:
    """A local directory with the files of checkpoint `folder` (itself when local, else a temporary download)."""
    folder = str(folder)
    if not _is_uri(folder):
        yield Path(folder)
        return
    with tempfile.TemporaryDirectory(prefix="sopo-ckpt-") as tmp:
        fs, path = pafs.FileSystem.from_uri(folder)
        pafs.copy_files(path, tmp, source_filesystem=fs, destination_filesystem=pafs.LocalFileSystem())
        yield Path(tmp)
