"""The learner group: Ray Train's TorchTrainer (DDP) running `learner.train_loop_per_worker` on
cluster.num_learners workers, fitted in a thread so the driver watches the run while it trains.

Ray Train restarts a failed group from its newest checkpoint up to faults.max_learner_failures times
(`FailureConfig`), keeps checkpoint.keep checkpoints, and reports every failure to the run control
(`CountLearnerFailures`), so `health/learner_restarts` counts each restart. Its controller checks the group every
faults.learner_poll_s seconds (`train_poll_env`).
"""

from __future__ import annotations

import os
import threading
from typing import Any

import ray.train

from sopo_ray.config import Config
from sopo_ray.distributed import placement
from sopo_ray.distributed.learner import LearnerSetup, train_loop_per_worker
from sopo_ray.distributed.ray_logs import train_logging
from sopo_ray.distributed.storage import RunStorage

POLL_ENV = "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S"
"""Ray Train reads its controller's health-check interval from the environment of the process that fits."""
USER_POLL = os.environ.get(POLL_ENV)
"""The interval set in the environment before this module was imported (it wins over the config)."""


def train_poll_env(cfg: Config) -> dict[str, str]:
    """{POLL_ENV: seconds} for the TorchTrainer of a run: the environment's value if one was set, else
    faults.learner_poll_s."""
    return {POLL_ENV: USER_POLL if USER_POLL is not None else str(cfg.faults.learner_poll_s)}


class CountLearnerFailures(ray.train.UserCallback):
    """Ray Train callback (it runs in Train's controller): tell the run control of every failed learner group, so
    `health/learner_restarts` counts each restart, also of a group that failed before its learners registered."""

    def __init__(self, control: Any) -> None:
        self.control = control

    def after_exception(self, run_context: Any, worker_exceptions: dict[int, Exception]) -> None:
        self.control.learner_failed.remote()


class LearnerGroup:
    """The run's learners: `start()` fits the TorchTrainer in a thread; `error` is what `fit()` raised, if anything."""

    def __init__(self, cfg: Config, setup: LearnerSetup, storage: RunStorage, control: Any, use_gpu: bool) -> None:
        from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
        from ray.train.torch import TorchTrainer

        os.environ.update(train_poll_env(cfg))  # read when fit() starts Train's controller, which passes it on
        self.trainer = TorchTrainer(
            train_loop_per_worker, train_loop_config={"setup": setup},
            scaling_config=ScalingConfig(num_workers=cfg.cluster.num_learners, use_gpu=use_gpu,
                                         resources_per_worker=placement.train_resources_per_worker(cfg.cluster,
                                                                                                 use_gpu)),
            run_config=RunConfig(name=storage.new_session(), storage_path=storage.root,
                                 failure_config=FailureConfig(max_failures=cfg.faults.max_learner_failures),
                                 callbacks=[CountLearnerFailures(control)],
                                 checkpoint_config=CheckpointConfig(num_to_keep=cfg.checkpoint.keep),
                                 logging_config=train_logging(cfg.log.verbose)))
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._fit, name="ray-train-fit", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def running(self) -> bool:
        return self.thread.is_alive()

    def wait(self, timeout: float) -> None:
        """Block until the learners end or `timeout` seconds pass."""
        self.thread.join(timeout=timeout)

    def _fit(self) -> None:
        try:
            self.trainer.fit()
        except BaseException as exc:  # noqa: BLE001 - reported by the driver thread
            self.error = exc
