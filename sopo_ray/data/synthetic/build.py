"""The embedded synthetic text-to-motion dataset: procedural motions from structured parameters.

`synthesize(params, frames, rng)` animates each segment of a motion (locomotion.py, gestures.py, lower.py),
plays them one after another, adds a little smooth noise, and places the body with forward kinematics
(pose.py). `build_synthetic(data_cfg)` draws `data.size` motions with their captions, exports them as
HumanML3D 263-dim features, splits them by parameter combination and writes the dataset folder (../dataset.py);
`load_synthetic` reads a split back, building the folder first when it does not exist.
Everything is a function of `data.seed` and the motion index, so a build is reproducible.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import shutil
import time
import warnings
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from functools import partial
from pathlib import Path

import numpy as np
from scipy.ndimage import gaussian_filter1d

from sopo_ray.config import DataConfig
from sopo_ray.data.dataset import SPLITS, MotionDataset, read_meta, read_split, write_split
from sopo_ray.data.synthetic import gestures, locomotion, lower
from sopo_ray.data.synthetic.captions import describe
from sopo_ray.data.synthetic.curves import smooth_noise
from sopo_ray.data.synthetic.pose import CHANNELS, Style, Track, pose_joints
from sopo_ray.data.synthetic.space import HELD_OUT_COMBOS, HELD_OUT_ORDERS, is_held_out, sample_params, segment_frames
from sopo_ray.errors import DataError
from sopo_ray.motion.features import group_mean_std, joints_to_features, load_mean_std

GENERATOR_VERSION = 2
"""Bump when the generator's output or the split changes, so that old dataset folders are rebuilt (it is in the
data id). 2: an in-distribution test split beside the compositional one."""

ANIMATORS: dict[str, Callable[[dict, int, np.random.Generator, Style], Track]] = {
    "walk": locomotion.gait_track, "jog": locomotion.gait_track, "run": locomotion.gait_track,
    "sidestep": locomotion.sidestep_track, "turn": locomotion.turn_track,
    "wave": gestures.wave_track, "raise": gestures.raise_track, "clap": gestures.clap_track,
    "punch": gestures.punch_track, "throw": gestures.throw_track,
    "squat": lower.squat_track, "jump": lower.jump_track, "kick": lower.kick_track,
    "kneel": lower.kneel_track, "sit": lower.sit_track,
}

# Standard deviation (degrees) of the slow noise added to each channel group: a live performer never holds a
# joint perfectly still. Legs get little, so planted feet stay believable.
_NOISE = {"sh": 3.0, "elbow": 4.0, "clav": 1.0, "spine": 1.5, "neck": 2.5, "pelvis": 0.6, "hip": 0.6, "knee": 0.8,
          "ankle": 0.6}

VAL_FRACTION = 0.05
"""Share of the seen-combination motions that go to the val split."""
TEST_FRACTION = 0.16
"""Share of the seen-combination motions that go to the in-distribution test split (>= 400 at the default size)."""
PARALLEL_MIN_SIZE = 200
"""Builds smaller than this per worker run in the calling process (starting workers costs about a second)."""


def synthesize(params: dict, frames: int, rng: np.random.Generator) -> np.ndarray:
    """Joint positions [frames + 1, 22, 3] of a motion (one extra frame: features drop the last one)."""
    sizes = segment_frames(params["fractions"], frames + 1)
    style = Style.sample(rng)
    tracks = [ANIMATORS[seg["action"]](seg, size, rng, style) for seg, size in zip(params["segments"], sizes,
                                                                                 strict=True)]
    track = Track.concat(tracks)
    for name in CHANNELS:
        # Segments meet at (almost) the neutral pose; a light blur removes the remaining small steps.
        group = name.split("_")[1] if name[:2] in ("l_", "r_") else name.split("_")[0]
        noise = smooth_noise(rng, track.n, _NOISE.get(group, 1.0), sigma=8.0)
        track[name] = gaussian_filter1d(track[name], 1.0, mode="nearest") + noise
    return pose_joints(track)


def data_id_for(data_cfg: DataConfig) -> str:
    """Stable id of a synthetic build: a hash of everything that changes its contents."""
    spec = {"generator": GENERATOR_VERSION, "size": data_cfg.size, "seed": data_cfg.seed,
            "min_frames": data_cfg.min_frames, "max_frames": data_cfg.max_frames,
            "captions_per_motion": data_cfg.captions_per_motion}
    digest = hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:12]
    return f"synthetic-{digest}"


def make_motion(data_cfg: DataConfig, index: int) -> dict:
    """Motion number `index` of the build: id, features [T, 263], captions and parameters."""
    rng = np.random.default_rng([data_cfg.seed, index])
    params, frames = sample_params(rng, data_cfg.min_frames, data_cfg.max_frames)
    joints = synthesize(params, frames, rng)
    captions = describe(params, rng, data_cfg.captions_per_motion)
    return {"motion_id": f"{index:06d}", "features": joints_to_features(joints), "captions": captions,
            "params": params}


def _generate(data_cfg: DataConfig) -> Iterator[dict]:
    """All motions of the build in index order, in worker processes when `data.build_workers` > 1."""
    workers = min(data_cfg.build_workers, max(1, data_cfg.size // PARALLEL_MIN_SIZE))
    done = 0
    if workers > 1:
        # "spawn": the caller may be a threaded process (Ray, torch) where fork is unsafe. Spawned workers
        # re-import the caller's main module; a script without an `if __name__ == "__main__":` guard breaks
        # the pool, and the build then carries on in this process.
        try:
            with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
                for motion in pool.map(partial(make_motion, data_cfg), range(data_cfg.size), chunksize=16):
                    done += 1
                    yield motion
        except BrokenProcessPool:
            warnings.warn("parallel dataset build failed (is the calling script missing an "
                          "`if __name__ == '__main__':` guard?); building in this process", stacklevel=2)
    yield from (make_motion(data_cfg, i) for i in range(done, data_cfg.size))


def assign_splits(params: list[dict], seed: int) -> list[str]:
    """Split name of each motion: held-out combinations and orders -> compositional; the rest mostly train, with
    a random share to val and to the in-distribution test split. Each split gets at least one motion when there
    are as many motions as splits."""
    rng = np.random.default_rng([seed, 7919])
    draws = rng.uniform(size=len(params))
    splits = []
    for p, u in zip(params, draws, strict=True):
        if is_held_out(p):
            splits.append("compositional")
        else:
            splits.append("val" if u < VAL_FRACTION else "test" if u < VAL_FRACTION + TEST_FRACTION else "train")
    if len(params) >= len(SPLITS):
        # A tiny build may miss a split: the largest of train/val/test gives it its last motion (so a held-out
        # motion never lands in train, val or test; a tiny compositional split may then hold a seen one).
        for name in SPLITS:
            if name not in splits:
                counts = {s: splits.count(s) for s in ("train", "val", "test") if s != name}
                donor = max(counts, key=lambda s: counts[s])
                splits[max(i for i, s in enumerate(splits) if s == donor)] = name
    return splits


def build_synthetic(data_cfg: DataConfig, progress: bool = True, replace: bool = True) -> Path:
    """Build the synthetic dataset into `data_cfg.root` and return the folder. The folder appears atomically;
    with `replace` an existing build there is swapped for the new one, without it an existing build is kept."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    root = Path(data_cfg.root)
    started = time.perf_counter()
    motions = []
    columns = (TextColumn("building synthetic motions"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, disable=not progress, transient=False) as bar:
        task = bar.add_task("build", total=data_cfg.size)
        for motion in _generate(data_cfg):
            motions.append(motion)
            bar.advance(task)
    splits = assign_splits([m["params"] for m in motions], data_cfg.seed)

    root.parent.mkdir(parents=True, exist_ok=True)
    staging = root.parent / f".{root.name}.building-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    try:
        _write_build(staging, data_cfg, motions, splits, started)
        _replace_folder(staging, root, replace)
    except BaseException:  # a failed or interrupted (Ctrl-C) build leaves no half-written folder behind
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return root


def _write_build(staging: Path, data_cfg: DataConfig, motions: list[dict], splits: list[str], started: float) -> None:
    """Write the splits, statistics and meta.json of a finished build into `staging`."""
    train_frames = np.concatenate([m["features"] for m, s in zip(motions, splits, strict=True) if s == "train"])
    mean, std = group_mean_std(train_frames)
    np.save(staging / "mean.npy", mean)
    np.save(staging / "std.npy", std)
    counts = {}
    for name in SPLITS:
        chosen = [m for m, s in zip(motions, splits, strict=True) if s == name]
        write_split(staging / f"{name}.parquet", chosen, data_cfg.max_frames)
        counts[name] = len(chosen)
    meta = {
        "data_id": data_id_for(data_cfg), "source": "synthetic", "skeleton": "t2m", "feature_dim": 263, "fps": 20,
        "generator_version": GENERATOR_VERSION, "config": data_cfg.model_dump(mode="json"), "counts": counts,
        "held_out_combos": list(HELD_OUT_COMBOS), "held_out_orders": [list(p) for p in HELD_OUT_ORDERS],
        "build_seconds": round(time.perf_counter() - started, 2),
    }
    (staging / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")


def _replace_folder(staging: Path, root: Path, replace: bool) -> None:
    """Move the finished build into place. With `replace`, an older build at `root` is swapped out; without,
    a build that another process finished first wins and this one is dropped (both are identical)."""
    if root.exists() and not replace:
        shutil.rmtree(staging, ignore_errors=True)
        return
    if root.exists():
        old = root.parent / f".{root.name}.old-{os.getpid()}"
        root.rename(old)
        staging.rename(root)
        shutil.rmtree(old, ignore_errors=True)
        return
    try:
        staging.rename(root)
    except OSError:
        if not (root / "meta.json").is_file():
            raise
        shutil.rmtree(staging, ignore_errors=True)


def load_synthetic(data_cfg: DataConfig, split: str) -> MotionDataset:
    """One split of the synthetic dataset at `data_cfg.root`, building the folder first if it does not exist."""
    root = Path(data_cfg.root)
    expected = data_id_for(data_cfg)
    if not (root / "meta.json").is_file():
        if root.exists() and any(root.iterdir()):
            raise DataError(f"{root} exists but holds no synthetic dataset (no meta.json); delete it or set "
                            "data.root to another folder")
        build_synthetic(data_cfg, replace=False)
    meta = read_meta(root)
    if meta.get("data_id") != expected:
        raise DataError(f"{root} holds synthetic dataset {meta.get('data_id')} but this data config gives "
                        f"{expected}; rebuild it with `sopo data build` (same --config/--set) or set data.root "
                        "to another folder")
    ids, features, lengths, captions, params = read_split(root / f"{split}.parquet")
    if features.shape[-1] != 263:
        raise DataError(f"{root / f'{split}.parquet'} has {features.shape[-1]}-dim features, expected 263; "
                        "rebuild it with `sopo data build`")
    mean, std = load_mean_std(root)
    return MotionDataset(motion_ids=ids, features=features, lengths=lengths, captions=captions, params=params,
                         mean=mean, std=std, data_id=expected, skeleton="t2m")
