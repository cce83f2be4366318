"""Checks on the paths a command will write, made before any work starts (and before Ray starts).

A folder or file a command writes must be creatable where it is asked for: not an existing file where a folder
is wanted (or the other way round), not under a parent that is a file, and in a place this user can write.
Each problem is one `ConfigError` naming the flag or config key, the path, and the fix; the check itself leaves
nothing behind (writability is probed with a temporary file that is removed at once).
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from sopo_ray.config import DataConfig
from sopo_ray.errors import ConfigError


def _nearest_existing(path: Path) -> Path:
    """`path` or its closest ancestor that exists."""
    path = path.absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def _check_creatable(target: Path, folder: Path, what: str) -> None:
    """`folder` (which will hold `target`) exists as a writable directory or can be created as one."""
    base = _nearest_existing(folder)
    if not base.is_dir():
        raise ConfigError(f"{what} {target} cannot be created: {base} is a file, not a folder; choose a path whose "
                          "parent folders are folders")
    try:
        with tempfile.TemporaryFile(dir=base):
            pass
    except OSError as exc:
        raise ConfigError(f"{what} {target} cannot be written: {base} is not writable ({exc.strerror or exc}); "
                          "choose a folder you can write to") from None


def check_output_dir(path: str | Path, what: str) -> Path:
    """Refuse a folder a command will create or write into (`what`: the flag or key naming it) that cannot be one."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise ConfigError(f"{what} {path} is an existing file, not a folder; pass a folder path (it is created if "
                          "missing)")
    _check_creatable(path, path, what)
    return path


def check_output_file(path: str | Path, what: str) -> Path:
    """Refuse a file a command will write (`what`: the flag naming it) that cannot be written there."""
    path = Path(path)
    if path.is_dir():
        raise ConfigError(f"{what} {path} is a folder; pass the path of the file to write (one inside it, say)")
    _check_creatable(path, path.parent, what)
    return path


def check_data_root(data_cfg: DataConfig) -> None:
    """Refuse a `data.root` that is a file, or, for a synthetic dataset not built yet, a folder that cannot be made."""
    root = Path(data_cfg.root)
    if root.exists() and not root.is_dir():
        raise ConfigError(f"data.root {root} is a file, not a dataset folder; set data.root to the dataset's folder "
                          "(or to a new folder for data.source=synthetic)")
    if data_cfg.source == "synthetic" and not (root / "meta.json").is_file():
        check_output_dir(root, "data.root")
