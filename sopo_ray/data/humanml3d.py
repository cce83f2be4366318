"""Loader for a real HumanML3D (or KIT-ML) folder, in the layout their processing scripts produce:

    <root>/new_joint_vecs/<id>.npy   features [T, 263] (KIT-ML: [T, 251]), un-normalised
    <root>/texts/<id>.txt            one caption per line: "caption#word/POS tokens#start#end" (seconds;
                                     0#0 = the whole clip, otherwise the caption describes that sub-clip)
    <root>/train.txt, val.txt, test.txt   motion ids, one per line
    <root>/Mean.npy, Std.npy         feature statistics

Like HumanML3D's `Text2MotionDatasetV2` it keeps clips and captioned sub-clips with
min_length <= frames < 200 (40 for HumanML3D, 24 for KIT-ML) and crops longer-than-`max_frames` clips to their
first `max_frames` frames. Sub-clips become motions of their own, named "<id>_<start>_<end>" (frames).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from sopo_ray.config import DataConfig
from sopo_ray.data.dataset import MotionDataset
from sopo_ray.errors import DataError
from sopo_ray.motion.features import load_mean_std

# Per source: (skeleton, feature size, frames per second, shortest kept clip). Clips must be shorter than 200.
LAYOUTS = {"humanml3d": ("t2m", 263, 20.0, 40), "kitml": ("kit", 251, 12.5, 24)}
MAX_LENGTH = 200


def parse_text_line(line: str) -> tuple[str, float, float] | None:
    """(caption, start s, end s) of one `caption#tokens#start#end` line; None for a line without a caption.
    Missing or NaN times count as 0 (the whole clip), as in HumanML3D's loader."""
    parts = line.strip().split("#")
    caption = parts[0].strip()
    if not caption:
        return None
    times = []
    for raw in parts[2:4]:
        try:
            value = float(raw)
        except ValueError:
            value = 0.0
        times.append(0.0 if np.isnan(value) else value)
    start, end = (times + [0.0, 0.0])[:2]
    return caption, start, end


def folder_id(root: Path, source: str, max_frames: int) -> str:
    """A stable id of the folder's contents: split lists and statistics (not its location)."""
    digest = hashlib.sha256(f"{source}|{max_frames}".encode())
    for name in ("train.txt", "val.txt", "test.txt", "Mean.npy", "Std.npy"):
        path = root / name
        digest.update(name.encode() + (path.read_bytes() if path.is_file() else b"-"))
    return f"{source}-{digest.hexdigest()[:12]}"


def _check_layout(root: Path, source: str, split: str) -> None:
    if not root.is_dir():
        raise DataError(f"{source} folder {root} not found; set data.root to the dataset folder that holds "
                        "new_joint_vecs/, texts/, train.txt and Mean.npy (or use data.source=synthetic)")
    for name in ("new_joint_vecs", "texts"):
        if not (root / name).is_dir():
            raise DataError(f"{root} has no {name}/ folder; point data.root at the processed {source} folder")
    if not (root / f"{split}.txt").is_file():
        raise DataError(f"{root} has no {split}.txt split list; copy the split files of {source} next to "
                        "new_joint_vecs/")


def load_humanml3d(data_cfg: DataConfig, split: str) -> MotionDataset:
    """One split of the real dataset at `data_cfg.root` (data.source humanml3d or kitml)."""
    source = data_cfg.source
    skeleton, dim, fps, min_length = LAYOUTS[source]
    root = Path(data_cfg.root)
    _check_layout(root, source, split)
    mean, std = load_mean_std(root)
    if mean.shape != (dim,) or std.shape != (dim,):
        raise DataError(f"{root}/Mean.npy has {mean.shape[0]} dims but data.source={source} needs {dim}; "
                        f"set data.source to {'kitml' if mean.shape[0] == 251 else 'humanml3d'} for this folder")
    if not (np.isfinite(mean).all() and np.isfinite(std).all() and (std > 0).all()):
        raise DataError(f"{root}/Mean.npy or Std.npy has NaN/inf, zero or negative entries; copy the dataset's "
                        "original files or recompute them from new_joint_vecs/")
    ids = [line.strip() for line in (root / f"{split}.txt").read_text().splitlines() if line.strip()]
    motions: dict[str, tuple[np.ndarray, list[str]]] = {}
    for motion_id in ids:
        vec_path, text_path = root / "new_joint_vecs" / f"{motion_id}.npy", root / "texts" / f"{motion_id}.txt"
        if not vec_path.is_file() or not text_path.is_file():
            continue
        features = np.load(vec_path, allow_pickle=False)
        if features.ndim != 2 or features.shape[1] != dim:
            other = "kitml" if features.ndim == 2 and features.shape[1] == 251 else "humanml3d"
            raise DataError(f"{vec_path} has shape {features.shape} but data.source={source} needs [T, {dim}]; "
                            f"set data.source={other} or fix the folder")
        if not np.isfinite(features).all():
            raise DataError(f"{vec_path} holds NaN/inf values; re-extract this motion or remove {motion_id} from "
                            f"{split}.txt")
        whole: list[str] = []
        clips: dict[tuple[int, int], list[str]] = {}
        for line in text_path.read_text(encoding="utf-8").splitlines():
            parsed = parse_text_line(line)
            if parsed is None:
                continue
            caption, start, end = parsed
            if start == 0.0 and end == 0.0:
                whole.append(caption)
            else:
                clips.setdefault((int(start * fps), int(end * fps)), []).append(caption)
        if whole and min_length <= len(features) < MAX_LENGTH:
            motions[motion_id] = (features, whole)
        for (a, b), captions in clips.items():
            clip = features[a:b]
            if min_length <= len(clip) < MAX_LENGTH:
                motions[f"{motion_id}_{a}_{b}"] = (clip, captions)
    if not motions:
        raise DataError(f"no usable motions in the {split} split of {root} (need new_joint_vecs/<id>.npy and "
                        f"texts/<id>.txt with {min_length} <= frames < {MAX_LENGTH}); check the folder")
    names = sorted(motions)
    max_frames = data_cfg.max_frames
    padded = np.zeros((len(names), max_frames, dim), dtype=np.float32)
    lengths = np.zeros(len(names), dtype=np.int64)
    for i, name in enumerate(names):
        features = motions[name][0][:max_frames]
        padded[i, :len(features)] = features
        lengths[i] = len(features)
    return MotionDataset(motion_ids=names, features=padded, lengths=lengths, captions=[motions[n][1] for n in names],
                         params=None, mean=mean, std=std, data_id=folder_id(root, source, max_frames),
                         skeleton=skeleton)
