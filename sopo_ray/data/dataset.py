"""In-memory datasets (`MotionDataset`) and their on-disk form: one Parquet file per split.

A synthetic dataset folder holds

    train.parquet, val.parquet, test.parquet, compositional.parquet   one row per motion:
        motion_id  string
        length     int32                        valid frames
        features   fixed_size_list<float>[max_frames * D]   un-normalised, zero past `length`
        captions   list<string>
        params     string                       structured parameters as JSON
    mean.npy, std.npy                           [D] train statistics, group-averaged std (HumanML3D style)
    meta.json                                   data_id, generator config, split counts, held-out combinations

A leaf of the data package: the synthetic builder (`data.synthetic.build`) and the HumanML3D / KIT-ML loader
(`data.humanml3d`) both produce these; `sopo_ray.data.load_dataset` picks one. See docs/data.md.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from sopo_ray.config import DataConfig
from sopo_ray.errors import DataError

SPLITS = ("train", "val", "test", "compositional")
"""train / val / test (in-distribution: unseen motions of combinations seen in training, as HumanML3D's test
split) / compositional (held-out combinations and action orders; embedded synthetic data only)."""
REAL_SPLITS = ("train", "val", "test")
"""The splits a real HumanML3D / KIT-ML folder has."""


def eval_splits(data_cfg: DataConfig) -> tuple[str, ...]:
    """The held-out splits a run reports, in-distribution first: test, plus compositional for synthetic data."""
    return ("test", "compositional") if data_cfg.source == "synthetic" else ("test",)
SKELETON_DIMS = {"t2m": 263, "kit": 251}


@dataclass
class MotionDataset:
    """One split of a text-to-motion dataset, in memory.

    motion_ids [N]; features [N, max_frames, D] float32 un-normalised, zero past each length; lengths [N] int64;
    captions [N][n_captions]; params [N] structured parameters (synthetic data only, else None); mean / std [D]
    train statistics; data_id identifies the build; skeleton "t2m" (22 joints, D = 263) or "kit" (21, 251).
    Caption j of motion i has the id f"{motion_ids[i]}#{j}".
    """

    motion_ids: list[str]
    features: np.ndarray
    lengths: np.ndarray
    captions: list[list[str]]
    params: list[dict] | None
    mean: np.ndarray
    std: np.ndarray
    data_id: str
    skeleton: str

    def __post_init__(self) -> None:
        n = len(self.motion_ids)
        if self.features.ndim != 3 or len(self.features) != n or len(self.lengths) != n or len(self.captions) != n:
            raise DataError(f"dataset {self.data_id}: inconsistent sizes (ids {n}, features "
                            f"{tuple(self.features.shape)}, lengths {len(self.lengths)}, "
                            f"captions {len(self.captions)})")
        if self.params is not None and len(self.params) != n:
            raise DataError(f"dataset {self.data_id}: {len(self.params)} parameter sets for {n} motions")
        expected = SKELETON_DIMS.get(self.skeleton)
        if expected != self.feature_dim or self.mean.shape != (expected,) or self.std.shape != (expected,):
            raise DataError(f"dataset {self.data_id}: skeleton {self.skeleton!r} needs {expected}-dim features and "
                            f"stats, got features {self.feature_dim}, mean {self.mean.shape}, std {self.std.shape}")
        empty = next((i for i, caps in enumerate(self.captions) if not caps or not all(c.strip() for c in caps)), None)
        if empty is not None:
            raise DataError(f"dataset {self.data_id}: motion {self.motion_ids[empty]} has an empty caption; "
                            "rebuild the dataset or fix its text file")

    @property
    def feature_dim(self) -> int:
        """Feature size D (263 for HumanML3D, 251 for KIT-ML)."""
        return int(self.features.shape[-1])

    @property
    def max_frames(self) -> int:
        """Padded clip length."""
        return int(self.features.shape[1])

    def __len__(self) -> int:
        return len(self.motion_ids)

    def subset(self, indices: list[int] | np.ndarray) -> MotionDataset:
        """A dataset holding only the motions at `indices` (same stats and data_id)."""
        idx = [int(i) for i in indices]
        return MotionDataset(
            motion_ids=[self.motion_ids[i] for i in idx], features=self.features[idx], lengths=self.lengths[idx],
            captions=[self.captions[i] for i in idx],
            params=None if self.params is None else [self.params[i] for i in idx],
            mean=self.mean, std=self.std, data_id=self.data_id, skeleton=self.skeleton)


def write_split(path: Path, motions: list[dict], max_frames: int, feature_dim: int = 263) -> None:
    """Write motions (dicts with motion_id, features [T, D], captions, params) as one Parquet split."""
    padded = np.zeros((len(motions), max_frames, feature_dim), dtype=np.float32)
    lengths = np.zeros(len(motions), dtype=np.int32)
    for i, m in enumerate(motions):
        length = min(len(m["features"]), max_frames)
        padded[i, :length] = m["features"][:length]
        lengths[i] = length
    flat = pa.array(padded.reshape(-1), type=pa.float32())
    table = pa.table({
        "motion_id": pa.array([m["motion_id"] for m in motions], type=pa.string()),
        "length": pa.array(lengths, type=pa.int32()),
        "features": pa.FixedSizeListArray.from_arrays(flat, max_frames * feature_dim),
        "captions": pa.array([list(m["captions"]) for m in motions], type=pa.list_(pa.string())),
        "params": pa.array([json.dumps(m["params"], sort_keys=True) for m in motions], type=pa.string()),
    })
    meta = {b"max_frames": str(max_frames).encode(), b"feature_dim": str(feature_dim).encode()}
    pq.write_table(table.replace_schema_metadata(meta), path, compression="zstd")


def read_split(path: Path) -> tuple[list[str], np.ndarray, np.ndarray, list[list[str]], list[dict]]:
    """(motion_ids, features [N, max_frames, D], lengths [N] int64, captions, params) of one Parquet split."""
    try:
        table = pq.read_table(path)
        meta = table.schema.metadata or {}
        max_frames, dim = int(meta[b"max_frames"]), int(meta[b"feature_dim"])
    except (OSError, pa.ArrowException, KeyError, ValueError) as exc:
        raise DataError(f"cannot read dataset split {path} ({type(exc).__name__}: {exc}); "
                        "rebuild it with `sopo data build`") from None
    n = table.num_rows
    column = table.column("features").combine_chunks()
    values = column.flatten().to_numpy(zero_copy_only=False) if n else np.zeros(0, np.float32)
    features = np.asarray(values, dtype=np.float32).reshape(n, max_frames, dim)
    lengths = table.column("length").to_numpy().astype(np.int64)
    captions = [list(c) for c in table.column("captions").to_pylist()]
    params = [json.loads(p) for p in table.column("params").to_pylist()]
    return table.column("motion_id").to_pylist(), features, lengths, captions, params


def read_meta(root: Path) -> dict:
    """The meta.json of a dataset folder."""
    try:
        return json.loads((Path(root) / "meta.json").read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise DataError(f"cannot read {Path(root) / 'meta.json'} ({exc}); rebuild with `sopo data build`") from None
