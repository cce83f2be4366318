"""`RolloutWorker`: the online half of SoPo. A Ray actor holding the policy at a known version and the reward model.

Loop (`serve_tickets`): claim a ticket from the replay queue (or wait: back-pressure) -> make sure the policy is at
the ticket's version (newest weights, or exactly the ticket's version in deterministic mode; weights change only
here, between batches) -> `algorithm.sample_groups`: K motions per caption with DDIM + classifier-free guidance
from per-sample seeds, scored by the reward model, x^l = argmin reward -> deliver the ticket's groups. It stops
when the queue closes. Its counters (version, batches, idle time by back-pressure reason, stage timings) and the
rewards of its groups go to the run's `RunControl` before every claim and after every delivery.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import numpy as np
import ray
import torch

from sopo_ray.algorithm import sample_groups
from sopo_ray.distributed.group import RolloutGroup, caption_table
from sopo_ray.distributed.replay_queue import Status
from sopo_ray.distributed.ticket_board import Ticket
from sopo_ray.distributed.weights import fetch_state, find_version, load_numpy_state
from sopo_ray.models.text_encoder import load_text_cache


def serve_tickets(name: str, queue: Any, serve: Callable[[Ticket], list[RolloutGroup]], totals: Counter[str],
                  report: Callable[[list[RolloutGroup] | None], None] = lambda groups: None) -> None:
    """Claim tickets from `queue` as `name` until it closes: wait out back-pressure (seconds counted in `totals` by
    reason, `idle_<reason>_s`), `serve` each ticket, deliver its groups. `report` runs before every claim (with
    None) and after every delivery (with the groups)."""
    while True:
        report(None)
        t0 = time.time()
        reply = ray.get(queue.claim.remote(name, 1.0))
        if reply.status is Status.CLOSED:
            return
        if reply.status is Status.WAIT:
            totals[f"idle_{reply.reason}_s"] += time.time() - t0
            continue
        totals["idle_claim_s"] += time.time() - t0
        ticket = reply.ticket
        groups = serve(ticket)
        t1 = time.time()
        ray.get(queue.put.remote(name, ticket.ticket_id, ticket.incarnation, groups))
        totals["put_s"] += time.time() - t1
        report(groups)


class RolloutWorker:
    """Policy (at `self.version`) + reward model; `run()` serves tickets until the replay queue closes.

    Created by `pool.RolloutPool` as `ray.remote(RolloutWorker).options(**actor_options(..., "rollout"))`. The base
    generator and reward model arrive as checkpoint payloads through the object store (no shared filesystem).
    """

    def __init__(self, name: str, cfg: Any, base_payload: dict, reward_payload: dict, dataset: Any, queue: Any,
                 store: Any, control: Any, keep_best: bool, use_gpu: bool = False) -> None:
        from sopo_ray.models.generator import generator_from_payload
        from sopo_ray.reward.oracle import rollout_reward

        if cfg.torch_threads:
            torch.set_num_threads(cfg.torch_threads)
        load_text_cache(cfg)
        device = "cuda" if use_gpu and torch.cuda.is_available() else "cpu"
        self.name, self.cfg, self.queue, self.store, self.control = name, cfg, queue, store, control
        self.keep_best = keep_best
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
        if version is not None and version == self.version:
            return
        timeout, who = self.cfg.faults.sync_timeout_s, f"rollout worker {self.name}"
        info = find_version(self.store, version, timeout, who)
        if info.version == self.version:
            return
        load_numpy_state(self.policy, fetch_state(info, timeout, who))
        self.version = info.version
        self.totals["weight_loads"] += 1

    def generate(self, caption_indices: list[int], version: int, positions: list[int] | None = None,
                 ticket: int = -1) -> list[RolloutGroup]:
        """Groups for the given caption-table rows with the policy as it is now (tagged `version`)."""
        d, o = self.cfg.diffusion, self.cfg.objective
        return sample_groups(self.policy, self.reward, self.features, self.lengths,
                             [self.table[i] for i in caption_indices], version=version, k=o.k,
                             steps=d.rollout_sample_steps, guidance=d.guidance_scale, eta=d.rollout_ddim_eta,
                             run_seed=self.cfg.seed,
                             keep_best=self.keep_best, positions=positions, ticket=ticket, worker=self.name,
                             params=self.params)

    def serve(self, ticket: Ticket) -> list[RolloutGroup]:
        """One ticket: the weights it needs, then its groups."""
        t1 = time.time()
        self.sync_weights(ticket.version if self.cfg.deterministic else None)
        t2 = time.time()
        groups = self.generate(ticket.caption_indices, self.version, ticket.positions, ticket.ticket_id)
        self.totals.update({"weights_s": t2 - t1, "generate_s": time.time() - t2, "tickets": 1, "groups": len(groups)})
        return groups

    def report(self, groups: list[RolloutGroup] | None) -> None:
        """Tell the run's control (without waiting) this worker's counters and its groups' rewards."""
        rewards = None if groups is None else [(g.reward_l, float(np.mean(g.rewards)), g.reward_best) for g in groups]
        self.control.worker_report.remote(self.name, self.stats(), rewards)

    def run(self) -> dict[str, Any]:
        """Serve tickets until the queue closes; returns the final stats."""
        serve_tickets(self.name, self.queue, self.serve, self.totals, self.report)
        return self.stats()
