"""The few matplotlib helpers the figures share (the run dashboard, `sopo experiment`'s plots): metric series
from metrics.jsonl records, smoothing, a headless pyplot, and saving."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np


def by_step(records: Iterable[dict[str, Any]], event: str = "step") -> list[dict[str, Any]]:
    """The newest record of each step among the `event` records, in step order (a resumed run logs the steps
    it redid again)."""
    steps = {r["step"]: r for r in records if r.get("event") == event}
    return [steps[s] for s in sorted(steps)]


def series(records: Iterable[dict[str, Any]], key: str) -> tuple[np.ndarray, np.ndarray]:
    """(steps, values) of `key` in the records that hold a number for it."""
    pairs = [(r["step"], r[key]) for r in records if isinstance(r.get(key), int | float)]
    if not pairs:
        return np.zeros(0), np.zeros(0)
    steps, values = zip(*pairs, strict=True)
    return np.asarray(steps, dtype=float), np.asarray(values, dtype=float)


def smooth(values: np.ndarray, window: int = 10) -> np.ndarray:
    """Moving average over `window` points, the first value repeated in front (same length; short series as
    they are)."""
    if len(values) < window:
        return values
    padded = np.concatenate([np.full(window - 1, values[0]), values])
    return np.convolve(padded, np.ones(window) / window, mode="valid")


def pyplot() -> Any:
    """matplotlib.pyplot on the file-only Agg backend (no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save(fig: Any, out_png: Path, dpi: int = 90) -> Path:
    """Lay out, write and close a figure; returns the path."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    out_png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_png, dpi=dpi)
    plt.close(fig)
    return out_png
