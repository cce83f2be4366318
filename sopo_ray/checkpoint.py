"""One checkpoint format for every model in the project, written atomically, read with weights_only=True.

A checkpoint is a plain dict of tensors and JSON-like values:
    {"format": "sopo_ray/1", "kind": "mdm" | "mld" | "reward" | "evaluator" | "trainer" | ...,
     "config": {...}, "data_id": "...", "state": {...}, ...extra}
`kind` and `data_id` let a loader refuse a checkpoint from another model or dataset with a clear message.
"""

from __future__ import annotations

import io
import os
import pickle
import re
import tempfile
import warnings
import zipfile
from pathlib import Path
from typing import Any

import torch

from sopo_ray.errors import CheckpointError

FORMAT = "sopo_ray/1"


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write `data` to `path` so a reader sees either the old file or the whole new one, never a half."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_checkpoint(path: str | Path, kind: str, state: dict[str, Any], config: dict[str, Any],
                    data_id: str | None = None, **extra: Any) -> Path:
    """Atomically write a checkpoint of `kind` holding `state` (tensors / plain values) and `config`."""
    payload = {"format": FORMAT, "kind": kind, "config": config, "data_id": data_id, "state": state, **extra}
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    atomic_write_bytes(path, buffer.getvalue())
    return Path(path)


def _unreadable(path: Path, exc: BaseException) -> str:
    """One line on why torch.load(weights_only=True) refused `path`, and what to do."""
    with open(path, "rb") as fh:
        head = fh.read(4)
    refused = re.search(r"Unsupported global: GLOBAL ([\w.]+)", str(exc))
    if refused or (isinstance(exc, pickle.UnpicklingError) and head[:1] == b"\x80"):
        what = f"the Python object {refused.group(1)}" if refused else "pickled Python objects"
        return (f"checkpoint {path} holds {what}, which safe loading (weights_only=True) refuses: it was not "
                "written by sopo_ray; pass a checkpoint from `sopo pretrain`/`sopo reward train`, or re-save "
                "only its tensors, and never load untrusted files with weights_only=False")
    if not head:
        problem = "is empty (0 bytes)"
    elif head == b"PK\x03\x04":
        problem = "is truncated or corrupt (its zip archive cannot be read)"
    else:
        problem = "is not a torch checkpoint (unknown file format)"
    return (f"checkpoint {path} {problem}; delete it and retrain (or resume from an earlier checkpoint), "
            "or pass another file")


def load_checkpoint(path: str | Path, kind: str | tuple[str, ...] | None = None,
                    data_id: str | None = None) -> dict[str, Any]:
    """Load a checkpoint safely (weights_only=True) and check its kind and dataset.

    Raises CheckpointError naming the file and the fix when the file is missing, corrupt, foreign
    (not written by sopo_ray), of another kind, or trained on another dataset.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} not found; train one first or pass --checkpoint PATH")
    try:
        with warnings.catch_warnings():  # a foreign pickle's protocol warning would break the one-line error
            warnings.filterwarnings("ignore", message="Detected pickle protocol", category=UserWarning)
            payload = torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, EOFError, pickle.UnpicklingError, zipfile.BadZipFile, ValueError, OSError) as exc:
        raise CheckpointError(_unreadable(path, exc)) from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        held = (f"a dict with keys {', '.join(map(str, list(payload)[:3]))}{', ...' if len(payload) > 3 else ''}"
                if isinstance(payload, dict) else f"a {type(payload).__name__}")
        raise CheckpointError(f"checkpoint {path} was not written by sopo_ray (no '{FORMAT}' header; it holds "
                              f"{held}); pass a checkpoint from `sopo pretrain`/`sopo reward train`, or wrap its "
                              "state dict with sopo_ray.checkpoint.save_checkpoint")
    kinds = (kind,) if isinstance(kind, str) else kind
    if kinds is not None and payload["kind"] not in kinds:
        raise CheckpointError(f"checkpoint {path} holds a '{payload['kind']}' model but a "
                              f"{' or '.join(repr(k) for k in kinds)} is needed here; pass the right checkpoint")
    if data_id is not None and payload.get("data_id") not in (None, data_id):
        raise CheckpointError(f"checkpoint {path} was trained on dataset {payload['data_id']} but this run uses "
                              f"{data_id}; retrain it on this dataset or point data.root at the original one")
    return payload


def load_foreign(path: str | Path, what: str, fix: str) -> Any:
    """torch.load(weights_only=True) of a file another project wrote (a released checkpoint). CheckpointError
    naming `what`, the file and `fix` when it is missing, corrupt or holds Python objects."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{what} {path} not found; {fix}")
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Detected pickle protocol", category=UserWarning)
            return torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, EOFError, pickle.UnpicklingError, zipfile.BadZipFile, ValueError, OSError) as exc:
        reason = str(exc).splitlines()[0][:120]
        raise CheckpointError(f"{what} {path} cannot be read safely ({reason}); {fix}") from None


def match_state(expected: dict[str, torch.Size], state: dict[str, Any], path: str | Path, fix: str) -> None:
    """CheckpointError unless `state` holds exactly the keys of `expected`, each a tensor of that shape: the first
    missing, unexpected or mis-shaped key is named (nothing is silently ignored)."""
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong = sorted(k for k in set(expected) & set(state)
                   if not isinstance(state[k], torch.Tensor) or state[k].shape != expected[k])
    if wrong:
        got = tuple(state[wrong[0]].shape) if isinstance(state[wrong[0]], torch.Tensor) else type(state[wrong[0]])
        raise CheckpointError(f"{path}: '{wrong[0]}' has shape {got} but {tuple(expected[wrong[0]])} is expected "
                              f"({len(wrong)} mis-shaped); {fix}")
    if missing or unexpected:
        first = f"missing '{missing[0]}'" if missing else f"unexpected '{unexpected[0]}'"
        raise CheckpointError(f"{path}: {len(missing)} missing and {len(unexpected)} unexpected weights "
                              f"({first}); {fix}")
