"""The end of a run on the console: a one-screen summary of where everything is, with the headline differences
(the results table itself: `evaluation.tables.comparison_table`), and the final evaluation as metric fields."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape

from sopo_ray.distributed.monitor import clock
from sopo_ray.evaluation.tables import HEADERS, delta

# Metrics of the summary's headline lines, when the evaluation has them.
HEADLINE = ("Reward", "Oracle", "R@3", "FID")


def eval_record(report: dict[str, Any]) -> dict[str, float]:
    """The final evaluation as metric fields (`eval/<split>/<model>/<metric>`, `..._ci95`,
    `eval/<split>/delta/<metric>`) for metrics.jsonl and the trackers."""
    record: dict[str, float] = {}
    for split, result in report["splits"].items():
        for model, row in result["rows"].items():
            for key, value in row.items():
                record[f"eval/{split}/{model}/{key}"] = value["mean"]
                record[f"eval/{split}/{model}/{key}_ci95"] = value["ci95"]
        for key, value in result["delta"].items():
            record[f"eval/{split}/delta/{key}"] = value
        for key, value in result.get("paired_oracle", {}).items():
            if key == "by_actions":   # per number of actions in the caption: its difference and CI
                for n, group in value.items():
                    record[f"eval/{split}/paired_oracle/actions_{n}/delta"] = group["delta"]
                    record[f"eval/{split}/paired_oracle/actions_{n}/ci95"] = group["ci95"]
            else:
                record[f"eval/{split}/paired_oracle/{key}"] = value
    return record


def print_summary(console: Console, run_dir: Path, *, objective: str, steps: int | None, elapsed_s: float,
                  policy: Path | None, report: dict[str, Any] | None, trackers: list[Any],
                  ray_log: str | None) -> None:
    """Where the run, policy, report, dashboard, metrics, trackers and Ray's log are; the headline deltas."""
    entries = [("run", f"{run_dir}  ({objective}, {steps} steps, {clock(elapsed_s)} in all)")]
    if policy is not None:
        entries.append(("policy", str(policy)))
    if report is not None:
        entries += [("report", f"{run_dir / 'report.md'}  (numbers: report.json)"),
                    ("dashboard", str(run_dir / "dashboard.png"))]
    entries.append(("metrics", str(run_dir / "metrics.jsonl")))
    entries += [(type(t).__name__.removesuffix("Tracker").lower(), t.where()) for t in trackers]
    if ray_log:
        entries.append(("ray log", ray_log))
    for split, result in (report or {}).get("splits", {}).items():   # in-distribution test first
        rows = {name: {k: (v["mean"], v["ci95"]) for k, v in row.items()} for name, row in result["rows"].items()}
        label = split
        for key in HEADLINE:
            d = delta(rows, key)
            if d is not None:
                base, aligned = rows["base"][key][0], rows["aligned"][key][0]
                entries.append((label, f"{HEADERS[key]:<9} {base:.3f} → {aligned:.3f}   Δ {d[0]:+.3f} ± {d[1]:.3f}"))
                label = ""
        if "paired_oracle" in result:
            p = result["paired_oracle"]
            entries.append((label, f"Oracle, all {p['motions']} motions paired: {p['base']:.3f} → {p['aligned']:.3f}"
                                   f"   Δ {p['delta']:+.3f} ± {p['ci95']:.3f}"))
    console.print("[bold]run summary[/]")
    for label, value in entries:
        console.print(f"  {label:<11} {escape(value)}", highlight=False)
