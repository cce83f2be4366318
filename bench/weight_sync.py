"""Weight sync per policy version: every weight vs only the trainable ones (`schedule.publish_weights`).

    python bench/weight_sync.py [--config configs/default.yaml --config ...] [--set key=value ...]
                                [--versions 8] [--workers 1]

For each config (default: the MDM default `configs/default.yaml`, the same with `model.kind=mld`, and the
paper-size `configs/humanml3d_mld.yaml`) it builds the policy (fresh weights: sizes and times do not depend on
the values) as a learner does (`algorithm.build_models`) and `--workers` rollout stand-in actors that hold a
policy built from the same base payload, as a rollout worker does. Then, per version, the two modes take turns
(alternating which goes first, so a machine whose load drifts slows both alike): the learner changes its
trainable parameters (an AdamW step on a stand-in loss), publishes them through the real `WeightStore`
(`state_to_numpy` + `publish`), and every stand-in pulls and loads that exact version with the real calls
(`find_version`, `fetch_state`, `load_numpy_state`).
Printed per config and mode: MB per version, median ms of the publish (learner side) and of the pull (until the
slowest worker has loaded it), and the ratios trainable / full. Each stand-in's final weights are compared with the
learner's, every entry, frozen ones included (`equal` column).
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Any

import numpy as np
import ray
import torch
from harness import fresh_payload, local_ray
from rich.console import Console
from rich.table import Table

from sopo_ray.algorithm import build_models
from sopo_ray.config import Config, load_config
from sopo_ray.distributed.weights import (
    WeightStore,
    fetch_state,
    find_version,
    load_numpy_state,
    publish_keys,
    state_to_numpy,
)
from sopo_ray.models.generator import generator_from_payload

MODES = ("full", "trainable")
DEFAULT_CONFIGS = [("configs/default.yaml", []), ("configs/default.yaml", ["model.kind=mld"]),
                   ("configs/humanml3d_mld.yaml", [])]


class SyncTarget:
    """A rollout worker's weight path only: a policy from the base payload, loaded with published versions."""

    def __init__(self, payload: dict[str, Any], store: Any, timeout_s: float) -> None:
        torch.set_num_threads(1)
        self.policy = generator_from_payload(payload).eval()
        self.store, self.timeout_s = store, timeout_s

    def sync(self, version: int) -> float:
        """Load exactly `version` (as `RolloutWorker.sync_weights` does in deterministic mode); seconds taken."""
        t0 = time.perf_counter()
        info = find_version(self.store, version, self.timeout_s, "bench")
        load_numpy_state(self.policy, fetch_state(info, self.timeout_s, "bench"))
        return time.perf_counter() - t0

    def state(self) -> dict[str, np.ndarray]:
        return state_to_numpy(self.policy)


def measure(cfg: Config, versions: int, workers: int) -> dict[str, dict[str, Any]]:
    """Per mode: bytes per version, publish and pull seconds per version, and whether the workers match."""
    payload = fresh_payload(cfg, np.zeros(263, np.float32), np.ones(263, np.float32))
    models = build_models(cfg, payload)
    keys = {mode: publish_keys(mode, payload) for mode in MODES}
    timeout = cfg.faults.sync_timeout_s
    out: dict[str, dict[str, Any]] = {}
    for mode in MODES:
        store = ray.remote(WeightStore).options(num_cpus=0).remote(4)
        ray.get(store.publish.remote(0, 0, state_to_numpy(payload["state"], keys[mode])))
        targets = [ray.remote(SyncTarget).options(num_cpus=0).remote(payload, store, timeout) for _ in range(workers)]
        ray.get([t.sync.remote(0) for t in targets])
        out[mode] = {"store": store, "targets": targets, "bytes": [], "publish_s": [], "pull_s": []}
    for v in range(1, versions + 1):
        models.optimizer.zero_grad()
        sum((p.float() ** 2).mean() for p in models.params).backward()   # a step that changes every trainable
        models.optimizer.step()
        for mode in MODES if v % 2 else MODES[::-1]:     # alternate who goes first
            o = out[mode]
            t0 = time.perf_counter()
            state = state_to_numpy(models.policy, keys[mode])
            ray.get(o["store"].publish.remote(v, v, state))
            t1 = time.perf_counter()
            ray.get([t.sync.remote(v) for t in o["targets"]])
            o["bytes"].append(sum(a.nbytes for a in state.values()))
            o["publish_s"].append(t1 - t0)
            o["pull_s"].append(time.perf_counter() - t1)
    learner = state_to_numpy(models.policy)
    for mode in MODES:
        o = out[mode]
        states = ray.get([t.state.remote() for t in o["targets"]])
        o["equal"] = all(s.keys() == learner.keys() and all(np.array_equal(learner[k], s[k]) for k in learner)
                         for s in states)
        for handle in (o["store"], *o["targets"]):
            ray.kill(handle)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", action="append", default=None, help="config to measure (repeatable)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], help="override for every config")
    parser.add_argument("--versions", type=int, default=8, help="versions published per mode and config")
    parser.add_argument("--workers", type=int, default=1, help="rollout stand-ins pulling every version")
    args = parser.parse_args()
    torch.set_num_threads(1)
    plans = [(path, []) for path in args.config] if args.config else DEFAULT_CONFIGS
    local_ray(num_cpus=2)
    console = Console(width=150)
    table = Table(title=f"weight sync per version, median of {args.versions} versions, {args.workers} worker(s)")
    for col in ("config", "mode", "MB / version", "publish ms", "pull ms", "publish + pull ms", "equal",
                "bytes vs full", "time vs full"):
        table.add_column(col, justify="left" if col in ("config", "mode") else "right")
    try:
        for path, extra in plans:
            cfg = load_config(path, [*extra, *args.overrides])
            res = measure(cfg, args.versions, args.workers)
            med = {m: {k: statistics.median(res[m][k]) for k in ("bytes", "publish_s", "pull_s")} for m in MODES}
            name = f"{cfg.name} ({cfg.model.kind})"
            for mode in MODES:
                r, f = med[mode], med["full"]
                total, total_full = r["publish_s"] + r["pull_s"], f["publish_s"] + f["pull_s"]
                table.add_row(name, mode, f"{r['bytes'] / 1e6:.2f}", f"{1e3 * r['publish_s']:.1f}",
                              f"{1e3 * r['pull_s']:.1f}", f"{1e3 * total:.1f}", str(res[mode]["equal"]),
                              f"{r['bytes'] / f['bytes']:.3f}x", f"{total / total_full:.2f}x")
    finally:
        ray.shutdown()
    console.print(table)


if __name__ == "__main__":
    main()
