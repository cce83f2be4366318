"""What the driver shows and logs about a running pipeline: namespaced metric records and the rich live view
(on a terminal) or one complete progress line per update (anywhere else).

Records (JSONL, one per line, `event` says which kind):
- `step`: one per learner step, from the learner (loss/*, reward/*, timing/*, health/staleness, idle fractions);
- `pipeline`: every `PIPELINE_EVERY_S` seconds, from the replay queue's stats and the rollout workers' reports to
  the RunControl (queue/*, rollout/*, health/*): queue depth, age, groups/s in and out, counters by drop reason,
  rollout idle fraction by back-pressure reason, the staleness histogram of trained pairs, and fault counters.
"""

from __future__ import annotations

import math
import time
from typing import Any

from rich.console import Group
from rich.panel import Panel
from rich.table import Table

PIPELINE_EVERY_S = 2.0
LINE_EVERY_S = 10.0  # progress lines off a terminal


def pipeline_record(stats: dict[str, Any], rollout: dict[str, Any], faults: dict[str, int]) -> dict[str, Any]:
    """A `pipeline` record from the replay queue's `stats()`, the RunControl's `rollout()` and the driver's fault
    counters."""
    workers = rollout["workers"]
    idle = [w.get("idle_frac", 0.0) for w in workers.values() if "idle_frac" in w]
    blocked = {}
    for w in workers.values():
        wall = max(w.get("wall_s", 0.0), 1e-9)
        for key, value in w.items():
            if key.startswith("idle_") and key.endswith("_s"):
                blocked[key[5:-2]] = blocked.get(key[5:-2], 0.0) + value / wall / max(len(workers), 1)
    record = {
        "queue/size": stats["size"], "queue/capacity": stats["capacity"], "queue/inflight": stats["inflight"],
        "queue/age_mean_s": stats["age_mean_s"], "queue/age_max_s": stats["age_max_s"],
        "queue/in_per_s": stats["in_per_s"], "queue/out_per_s": stats["out_per_s"],
        "queue/generated": stats["generated"], "queue/consumed": stats["consumed"],
        "queue/accounting_ok": stats["accounting_ok"], "queue/blocked": stats["blocked"],
        **{f"queue/dropped_{k}": v for k, v in stats["dropped"].items()},
        "rollout/groups_per_s": stats["in_per_s"], "rollout/reward_l": rollout["reward_l_mean"],
        "rollout/reward_mean": rollout["reward_mean"], "rollout/reward_best": rollout["reward_best_mean"],
        "rollout/frac_below_tau": rollout["frac_below_tau"], "rollout/workers": len(workers),
        "rollout/versions": sorted({w.get("version", -1) for w in workers.values()}),
        "rollout/nodes": sorted({w["node"] for w in workers.values() if "node" in w}),
        "health/rollout_idle_frac": sum(idle) / len(idle) if idle else None,
        **{f"health/rollout_idle_{k}_frac": v for k, v in blocked.items()},
        "health/staleness_hist": stats["staleness_hist"],
        **{f"health/{k}": v for k, v in faults.items()},
    }
    return record


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


class LiveView:
    """Holds the newest learner and pipeline records and renders them as one rich panel."""

    def __init__(self, title: str, total_steps: int, uses_rollouts: bool) -> None:
        self.title, self.total_steps, self.uses_rollouts = title, total_steps, uses_rollouts
        self.step: dict[str, Any] = {}
        self.pipeline: dict[str, Any] = {}
        self.started = time.time()
        self.message = "starting"
        self._last_time, self._last_fields = -LINE_EVERY_S, ""

    def render(self) -> Panel:
        """The live panel: progress, learner, rollout, queue and health sections."""
        s, p = self.step, self.pipeline
        step = s.get("step", 0)
        elapsed = time.time() - self.started
        learner = Table.grid(padding=(0, 2))
        learner.add_row("step", f"{step}/{self.total_steps}", "version", _fmt(s.get("version", 0)),
                        "elapsed", f"{elapsed:.0f}s")
        learner.add_row("loss", _fmt(s.get("loss/loss")), "reward x^l", _fmt(s.get("reward/x_l")),
                        "frac<tau", _fmt(s.get("loss/frac_below_tau")))
        learner.add_row("margin", _fmt(s.get("loss/reward_margin")), "grad", _fmt(s.get("loss/grad_norm")),
                        "learner idle", _fmt(s.get("health/learner_idle_frac_total"), 2))
        parts: list[Any] = [learner]
        if self.uses_rollouts and p:
            rollout = Table.grid(padding=(0, 2))
            rollout.add_row("groups/s in", _fmt(p.get("queue/in_per_s"), 2), "out", _fmt(p.get("queue/out_per_s"), 2),
                            "rollout idle", _fmt(p.get("health/rollout_idle_frac"), 2))
            rollout.add_row("queue", f"{p.get('queue/size')}/{p.get('queue/capacity')}",
                            "in flight", _fmt(p.get("queue/inflight")), "blocked", _fmt(p.get("queue/blocked")))
            dropped = {k[len("queue/dropped_"):]: v for k, v in p.items() if k.startswith("queue/dropped_") and v}
            rollout.add_row("generated", _fmt(p.get("queue/generated")), "consumed", _fmt(p.get("queue/consumed")),
                            "dropped", ", ".join(f"{k}={v}" for k, v in dropped.items()) or "0")
            hist = p.get("health/staleness_hist") or {}
            rollout.add_row("staleness", " ".join(f"{k}:{v}" for k, v in sorted(hist.items())) or "-",
                            "workers", _fmt(p.get("rollout/workers")), "versions", _fmt(p.get("rollout/versions")))
            parts.append(rollout)
        parts.append(self.message)
        return Panel(Group(*parts), title=self.title)

    def line(self, now: float | None = None) -> str:
        """One complete progress line (logs, pipes, job logs): elapsed time, learner, then pipeline fields."""
        return f"[{clock((time.time() if now is None else now) - self.started)}] {self._fields()}"

    def log_line(self, now: float, final: bool = False) -> str | None:
        """The progress line when one is due: every LINE_EVERY_S, and at the end unless the last one said it."""
        fields = self._fields()
        due = fields != self._last_fields if final else now - self._last_time >= LINE_EVERY_S
        if not due:
            return None
        self._last_time, self._last_fields = now, fields
        return self.line(now)

    def _fields(self) -> str:
        s, p = self.step, self.pipeline
        parts = [f"step {s.get('step', 0)}/{self.total_steps} v{s.get('version', 0)}",
                 f"loss {_fmt(s.get('loss/loss'))} r(x^l) {_fmt(s.get('reward/x_l'))} "
                 f"learner-idle {_fmt(s.get('health/learner_idle_frac_total'), 2)}"]
        if self.uses_rollouts and p:
            dropped = sum(v for k, v in p.items() if k.startswith("queue/dropped_") and isinstance(v, int))
            parts.append(f"queue {p.get('queue/size')}/{p.get('queue/capacity')} "
                         f"in {_fmt(p.get('queue/in_per_s'), 2)}/s out {_fmt(p.get('queue/out_per_s'), 2)}/s "
                         f"dropped {dropped} rollout-idle {_fmt(p.get('health/rollout_idle_frac'), 2)}")
        return " | ".join(parts)


def clock(seconds: float) -> str:
    """`42s`, `3m05s`, `1h02m`."""
    seconds = int(seconds)
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
