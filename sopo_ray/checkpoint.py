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
import tempfile
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
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, EOFError, pickle.UnpicklingError, zipfile.BadZipFile, ValueError, OSError) as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(
            f"checkpoint {path} is corrupt or not a safe torch checkpoint ({reason[:120]}); "
            "delete it and retrain, or point to another file"
        ) from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(f"checkpoint {path} was not written by sopo_ray (no '{FORMAT}' header); "
                              "convert it with the model's loader or retrain with sopo_ray")
    kinds = (kind,) if isinstance(kind, str) else kind
    if kinds is not None and payload["kind"] not in kinds:
        raise CheckpointError(f"checkpoint {path} holds a '{payload['kind']}' model but a "
                              f"{' or '.join(repr(k) for k in kinds)} is needed here; pass the right checkpoint")
    if data_id is not None and payload.get("data_id") not in (None, data_id):
        raise CheckpointError(f"checkpoint {path} was trained on dataset {payload['data_id']} but this run uses "
                              f"{data_id}; retrain it on this dataset or point data.root at the original one")
    return payload
