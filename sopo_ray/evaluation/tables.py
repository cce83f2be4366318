"""How evaluation results read, in one place: each metric's header with its direction, a `mean±ci` cell, and the
tables built from them (`sopo evaluate`'s, the end of a run's on the console and in report.md, and the cells of
`sopo experiment`'s results.md).

The end-of-run table has one row per metric and one column per model (base, aligned, the difference), so it is
about 70 characters wide and fits a terminal, a file and a job log alike with every number in full. The
difference's ± combines the two models' 95% CIs as if they were independent (sqrt(ci_base² + ci_aligned²)); both
evaluations share captions, lengths and noises, so their errors are positively correlated and the interval of the
paired difference is usually narrower.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from rich.table import Table

from sopo_ray.evaluation.protocol import COLUMNS

HEADERS = {"R@1": "R@1 ↑", "R@2": "R@2 ↑", "R@3": "R@3 ↑", "FID": "FID ↓", "MM-Dist": "MM-Dist ↓",
           "Diversity": "Diversity →", "MultiModality": "MModality ↑", "Oracle": "Oracle ↑", "Reward": "Reward ↑",
           "Oracle-all": "Oracle, all motions ↑"}
"""Column header of each metric, with the better direction (→: closest to the real motions')."""
MetricRows = dict[str, dict[str, Sequence[float]]]
"""{model name: {metric: (mean, 95% CI half-width)}}."""


def cell(value: Sequence[float] | None, digits: int = 3) -> str:
    """`mean±ci`, or '-' for a metric that does not apply."""
    return "-" if value is None else f"{value[0]:.{digits}f}±{value[1]:.{digits}f}"


def delta(rows: MetricRows, key: str) -> tuple[float, float] | None:
    """(aligned - base, combined 95% CI half-width) of one metric, or None when a model lacks it."""
    base, aligned = rows.get("base", {}).get(key), rows.get("aligned", {}).get(key)
    if base is None or aligned is None:
        return None
    return aligned[0] - base[0], math.hypot(aligned[1], base[1])


def delta_cell(value: tuple[float, float] | None) -> str:
    return "-" if value is None else f"{value[0]:+.3f}±{value[1]:.3f}"


def models_table(rows: MetricRows, title: str) -> Table:
    """`sopo evaluate`: a row per model, a column per metric."""
    table = Table(title=title)
    table.add_column("Model", no_wrap=True)
    for key in COLUMNS:
        table.add_column(HEADERS[key], justify="right", no_wrap=True)
    for name, row in rows.items():
        table.add_row(name, *(cell(row.get(key)) for key in COLUMNS))
    return table


def comparison_table(rows: MetricRows, title: str) -> Table:
    """The end of a run: metrics as rows; base, aligned and Δ aligned-base as columns; cells never shortened."""
    table = Table(title=title, title_justify="left")
    table.add_column("metric", no_wrap=True)
    for name in rows:
        table.add_column(name, justify="right", no_wrap=True)
    table.add_column("Δ aligned-base", justify="right", no_wrap=True)
    for key in COLUMNS:
        if any(key in row for row in rows.values()):
            table.add_row(HEADERS[key], *(cell(row.get(key)) for row in rows.values()), delta_cell(delta(rows, key)))
    return table


def markdown(head: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    """The lines of a markdown table: the header, its rule, one line per row (every markdown table here)."""
    return ["| " + " | ".join(head) + " |", "|" + "---|" * len(head), *("| " + " | ".join(r) + " |" for r in rows)]


def comparison_markdown(rows: MetricRows) -> list[str]:
    """report.md: a row per model, a column per metric, and the row of differences aligned - base."""
    deltas = [delta(rows, k) for k in COLUMNS]
    return markdown(["model", *(HEADERS[k] for k in COLUMNS)],
                    [*([name, *(cell(row.get(k)) for k in COLUMNS)] for name, row in rows.items()),
                     ["Δ aligned-base", *("-" if d is None else f"{d[0]:+.3f}" for d in deltas)]])
