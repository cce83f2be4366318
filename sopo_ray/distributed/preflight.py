"""Everything a run checks before it starts anything: the paths it writes, the run directory's state, memory.

`preflight` runs before the artifacts are built and before Ray starts, so a refused run costs seconds and leaves
nothing behind:

- paths: the run directory, `cluster.storage_path`, `data.root` and `workdir` (where missing artifacts will be
  built) must be folders this user can create or write (`sopo_ray.paths`);
- a new run needs a folder that holds no earlier run (`check_new_run`);
- a resumed run continues from the newest checkpoint that loads (`resume.newest_loadable`): a newer one cut off by
  a crash or corrupted on disk is skipped for the complete one before it, as the learners do; a run whose
  checkpoints were deleted after steps were logged is refused instead of retrained from step 0 into the old
  metrics, and a run that already finished is refused instead of evaluated again (`find_resume_point`);
- the memory estimate of `memory.py` must fit this machine when the run starts a local Ray.

`hold` keeps a second driver out of a run directory that a running driver uses.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path

from sopo_ray import artifacts, memory
from sopo_ray.config import Config
from sopo_ray.distributed import cluster
from sopo_ray.distributed.resume import LEARNER_FILE, ResumePoint, newest_loadable
from sopo_ray.distributed.storage import RunStorage
from sopo_ray.errors import CheckpointError, ConfigError
from sopo_ray.paths import check_data_root, check_output_dir, check_output_file
from sopo_ray.tracking import read_metrics

RUN_FILES = ("config.yaml", "metrics.jsonl", "policy.pt", "report.md")
"""Files every run writes into its directory; any of them marks the folder as an earlier run's."""


def logged_steps(run_dir: Path) -> int:
    """The highest learner step the run's metrics.jsonl records (0 when none)."""
    metrics = run_dir / "metrics.jsonl"
    if not metrics.is_file():
        return 0
    return max((int(r.get("step", 0)) for r in read_metrics(metrics) if r.get("event") == "step"), default=0)


def check_paths(cfg: Config, run_dir: Path, storage: RunStorage) -> None:
    """Refuse a run directory, storage path, dataset folder or workdir the run cannot write (or read)."""
    check_output_dir(run_dir, "run directory")
    if "://" not in storage.root and Path(storage.root) != run_dir.resolve():
        check_output_dir(storage.root, "cluster.storage_path")
    check_data_root(cfg.data)
    workdir = Path(cfg.workdir)
    if workdir.exists() and not workdir.is_dir():
        raise ConfigError(f"workdir {workdir} is a file, not a folder; set workdir to the folder that caches the "
                          "base model, reward model and evaluator (e.g. artifacts)")
    wanted = [artifacts.base_path(cfg), artifacts.reward_path(cfg)]
    wanted += [artifacts.evaluator_path(cfg)] if cfg.log.final_eval else []
    for path in wanted:
        if not path.is_file():
            check_output_file(path, "workdir")


def check_new_run(run_dir: Path, storage: RunStorage) -> None:
    """Refuse a new run's directory that already holds an earlier run (its checkpoints, config or metrics)."""
    if storage.latest(LEARNER_FILE) is not None:
        raise ConfigError(f"{storage.root} already holds checkpoints of an earlier run; continue it with "
                          f"`python -m sopo_ray.run --resume {run_dir}` or choose another --output-dir")
    found = [name for name in RUN_FILES if (run_dir / name).exists()]
    if found:
        resumable = (run_dir / "config.yaml").is_file() and not logged_steps(run_dir)
        fix = f"continue it with `python -m sopo_ray.run --resume {run_dir}`, " if resumable else ""
        raise ConfigError(f"{run_dir} already holds an earlier run ({', '.join(found)}); {fix}choose another "
                          "--output-dir, or delete the folder to start over in it")


def find_resume_point(cfg: Config, run_dir: Path, storage: RunStorage, with_queue: bool) -> ResumePoint:
    """Where a resumed run continues, or a refusal when resuming would corrupt or repeat the run."""
    point = newest_loadable(storage, with_queue=with_queue)
    if point.folder is None and point.skipped:
        raise CheckpointError(f"--resume {run_dir}: no checkpoint of the run can be read ({point.skipped[0]}"
                              f"{' and more' if len(point.skipped) > 1 else ''}); restore the learner-*/ folders "
                              "from a copy, or start a new run with another --output-dir")
    logged = logged_steps(run_dir)
    if point.folder is None and logged:
        raise CheckpointError(f"--resume {run_dir}: metrics.jsonl records {logged} learner steps but {storage.root} "
                              "holds no checkpoint (learner-*/ deleted or moved?); restore the learner-*/ folders, "
                              "or start a new run with another --output-dir")
    s = cfg.schedule
    outputs = ["policy.pt", *(["report.md"] if cfg.log.final_eval else [])]
    if point.folder is not None and point.step >= s.total_steps and all((run_dir / f).is_file() for f in outputs):
        raise ConfigError(f"--resume {run_dir}: the run already finished (step {point.step} of "
                          f"schedule.total_steps={s.total_steps}, {' and '.join(outputs)} written); to train on, "
                          f"add --set schedule.total_steps=N with N > {point.step}, or start a new run")
    return point


def check_resume_point(point: ResumePoint, art: artifacts.Artifacts) -> None:
    """Refuse a checkpoint trained on another dataset or aligned from another base model than the run's."""
    if point.learner is None:
        return
    if point.learner.get("data_id") not in (None, art.train.data_id):
        raise CheckpointError(f"checkpoint {point.folder} was trained on dataset {point.learner['data_id']} but this "
                              f"run uses {art.train.data_id}; point data.root at the run's original dataset")
    if not artifacts.same_reference(point.learner.get("reference"), art.reference_id):
        raise CheckpointError(f"checkpoint {point.folder} was aligned from reference {point.learner.get('reference')} "
                              f"but the base model is now {art.reference_id}; restore that base or start a new run")


def preflight(cfg: Config, run_dir: Path, storage: RunStorage, resume: bool, with_queue: bool) -> ResumePoint:
    """Every check before the run builds or starts anything; returns where a resumed run continues."""
    check_paths(cfg, run_dir, storage)
    if resume:
        point = find_resume_point(cfg, run_dir, storage, with_queue)
    else:
        check_new_run(run_dir, storage)
        point = ResumePoint()
    if not cluster.joins_cluster(cfg.cluster):
        memory.check_fits(cfg, memory.machine_memory(), "this machine", whole_run=True)
    return point


@contextlib.contextmanager
def hold(run_dir: Path) -> Iterator[None]:
    """Keep other drivers out of `run_dir` while this one uses it: an advisory lock on the folder itself (nothing is
    written; the lock goes when the block ends or the process dies). A folder that does not exist yet is free."""
    if not run_dir.is_dir():
        yield
        return
    fd = os.open(run_dir, os.O_RDONLY)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ConfigError(f"{run_dir} is in use by another running `sopo align` (or python -m sopo_ray.run); "
                              "wait for it to finish or stop it first, or choose another --output-dir") from None
        yield
    finally:
        os.close(fd)
