"""The end of a run on the console: the results table and a one-screen summary of where everything is.

The results table has one row per metric and one column per model (base, aligned, the difference), so it is
about 70 characters wide and fits a terminal, a file and a job log alike with every number in full. The
difference's ± combines the two models' 95% CIs as if they were independent (sqrt(ci_base² + ci_aligned²));
both evaluations share captions, lengths and noises, so their errors are positively correlated and the interval
of the paired difference is usually narrower.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from sopo_ray.distributed.monitor import clock

# Metrics of the summary's headline lines, when the evaluation has them.
HEADLINE = ("Reward", "Oracle", "R@3", "FID")
MetricRows = dict[str, dict[str, tuple[float, float]]]


def delta(rows: MetricRows, key: str) -> tuple[float, float] | None:
    """(aligned - base, combined 95% CI half-width) of one metric, or None when a model lacks it."""
    base, aligned = rows.get("base", {}).get(key), rows.get("aligned", {}).get(key)
    if base is None or aligned is None:
        return None
    return aligned[0] - base[0], math.hypot(aligned[1], base[1])


def format_delta(value: tuple[float, float] | None) -> str:
    return "-" if value is None else f"{value[0]:+.3f}±{value[1]:.3f}"


def results_table(rows: MetricRows, title: str) -> Table:
    """Metrics as rows; base, aligned and Δ aligned-base as columns; `mean±ci` cells, never shortened."""
    from sopo_ray.commands.evaluate import HEADERS, format_cell
    from sopo_ray.evaluation.protocol import COLUMNS

    table = Table(title=title, title_justify="left")
    table.add_column("metric", no_wrap=True)
    for name in rows:
        table.add_column(name, justify="right", no_wrap=True)
    table.add_column("Δ aligned-base", justify="right", no_wrap=True)
    for key in COLUMNS:
        if any(key in row for row in rows.values()):
            table.add_row(HEADERS[key], *(format_cell(row.get(key)) for row in rows.values()),
                          format_delta(delta(rows, key)))
    return table


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
            record[f"eval/{split}/paired_oracle/{key}"] = value
    return record


def print_summary(console: Console, run_dir: Path, *, objective: str, steps: int | None, elapsed_s: float,
                  policy: Path | None, report: dict[str, Any] | None, trackers: list[Any],
                  ray_log: str | None) -> None:
    """Where the run, policy, report, dashboard, metrics, trackers and Ray's log are; the headline deltas."""
    from sopo_ray.commands.evaluate import HEADERS

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
