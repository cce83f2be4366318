"""`RolloutWorker`: the online half of SoPo. A Ray actor holding the policy at a known version and the reward model.

Loop (`run`): claim a ticket from the replay queue (or wait: back-pressure) -> make sure the policy is at the
ticket's version (newest weights, or exactly the ticket's version in deterministic mode; weights change only
here, between batches) -> sample K motions per caption with DDIM + classifier-free guidance from per-sample seeds
-> score them with the reward model -> keep x^l = argmin reward as a `RolloutGroup` -> push the ticket's groups.
It stops when the queue closes. Its stats (version, batches, idle time by back-pressure reason, stage timings)
ride along with every queue call, so the driver sees them without calling the worker.
"""

from __future__ import annotations

import time
from collections import Counter
from typing import Any

import ray
import torch

from sopo_ray.algorithm import sample_groups
from sopo_ray.distributed.group import RolloutGroup, caption_table
from sopo_ray.distributed.weights import call_with_timeout, fetch_weights, load_numpy_state
from sopo_ray.models.text_encoder import load_text_cache


class RolloutWorker:
    """Policy (at `self.version`) + reward model; `run()` serves tickets until the replay queue closes.

    Created by the driver as `ray.remote(RolloutWorker).options(**actor_options(..., "rollout"))`. The base
    generator and reward model arrive as checkpoint payloads through the object store (no shared filesystem).
    """

    def __init__(self, name: str, cfg: Any, base_payload: dict, reward_payload: dict, dataset: Any, queue: Any,
                 store: Any, keep_best: bool, use_gpu: bool = False) -> None:
        from sopo_ray.models.generator import generator_from_payload
        from sopo_ray.reward.oracle import rollout_reward

        if cfg.torch_threads:
            torch.set_num_threads(cfg.torch_threads)
        load_text_cache(cfg)
        device = "cuda" if use_gpu and torch.cuda.is_available() else "cpu"
        self.name, self.cfg, self.queue, self.store, self.keep_best = name, cfg, queue, store, keep_best
        self.policy = generator_from_payload(base_payload).to(device).eval()
        self.reward = rollout_reward(cfg.reward.kind, reward_payload, dataset).to(device).eval()
        self.features, self.lengths, self.params = dataset.features, dataset.lengths, dataset.params
        self.table = caption_table(dataset.motion_ids, dataset.captions)
        self.version = -1
        self.node = ray.get_runtime_context().get_node_id()
        self.started_at = time.time()
        self.totals: Counter[str] = Counter()

    def stats(self) -> dict[str, Any]:
        """Cumulative counters and seconds (busy, idle by back-pressure reason, per stage)."""
        wall = max(time.time() - self.started_at, 1e-9)
        idle = sum(v for k, v in self.totals.items() if k.startswith("idle_"))
        return {"version": self.version, "wall_s": wall, "idle_frac": idle / wall, "node": self.node,
                **dict(self.totals)}

    def sync_weights(self, version: int | None) -> None:
        """Load the newest weights (`version` None) or exactly `version`, if not already held."""
        s = self.cfg.faults
        if version is None:
            info = call_with_timeout(self.store.latest.remote(), s.sync_timeout_s, f"rollout worker {self.name}")
            if info is None or info.version == self.version:
                return
            version = info.version
        if version == self.version:
            return
        self.version, state = fetch_weights(self.store, version, s.sync_timeout_s, f"rollout worker {self.name}")
        load_numpy_state(self.policy, state)
        self.totals["weight_loads"] += 1

    def generate(self, caption_indices: list[int], version: int, positions: list[int] | None = None,
                 ticket: int = -1) -> list[RolloutGroup]:
        """Groups for the given caption-table rows with the policy as it is now (tagged `version`)."""
        d, o = self.cfg.diffusion, self.cfg.objective
        return sample_groups(self.policy, self.reward, self.features, self.lengths,
                             [self.table[i] for i in caption_indices], version=version, k=o.k,
                             steps=d.rollout_sample_steps, guidance=d.guidance_scale, run_seed=self.cfg.seed,
                             keep_best=self.keep_best, positions=positions, ticket=ticket, worker=self.name,
                             params=self.params)

    def run(self) -> dict[str, Any]:
        """Serve tickets until the queue closes; returns the final stats."""
        while True:
            t0 = time.time()
            reply = ray.get(self.queue.claim.remote(self.name, self.stats(), 1.0))
            if reply.status == "closed":
                return self.stats()
            if reply.status == "wait":
                self.totals[f"idle_{reply.reason}_s"] += time.time() - t0
                continue
            ticket = reply.ticket
            self.totals["idle_claim_s"] += time.time() - t0
            t1 = time.time()
            self.sync_weights(ticket.version if self.cfg.deterministic else None)
            t2 = time.time()
            groups = self.generate(ticket.caption_indices, self.version,
                                   list(range(ticket.start, ticket.start + ticket.size)), ticket.ticket_id)
            t3 = time.time()
            self.totals.update({"weights_s": t2 - t1, "generate_s": t3 - t2, "tickets": 1, "groups": len(groups)})
            ray.get(self.queue.put.remote(self.name, ticket.ticket_id, ticket.epoch, groups, self.stats()))
            self.totals["put_s"] += time.time() - t3
