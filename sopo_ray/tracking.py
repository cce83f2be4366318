"""Structured metrics: one JSON object per line, `{step, time, ...}`, easy to plot or load with pandas.

A MetricsWriter can also hand each record to experiment trackers (TensorBoard, W&B: `sopo_ray.trackers`), so
they see exactly what metrics.jsonl holds.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Protocol


def _clean(value: Any) -> Any:
    """JSON-safe scalars: tensors/numpy to Python numbers, non-finite floats to None."""
    if hasattr(value, "item") and getattr(value, "ndim", 0) == 0:
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    return value


class Tracker(Protocol):
    """Something that follows a run's metric records (an experiment tracker)."""

    def log(self, step: int, record: dict[str, Any]) -> None: ...

    def close(self) -> None: ...


class MetricsWriter:
    """Appends metric records to a JSONL file, flushing each line so a crash loses nothing written, and hands
    each record to `trackers` (closed with the writer).

    A file whose last line was cut off (a crash or a full disk mid-write) is repaired before appending: a tail
    that still parses gets its newline, one that does not is dropped (`dropped_tail` holds it), so a new record
    never joins a broken line.
    """

    def __init__(self, path: str | Path, trackers: Sequence[Tracker] = ()) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.dropped_tail = _repair_last_line(self.path)
        self._fh = open(self.path, "a", buffering=1)  # noqa: SIM115 - kept open for the run
        self._t0 = time.time()
        self.trackers = list(trackers)

    def log(self, step: int, **metrics: Any) -> dict[str, Any]:
        record = {"step": int(step), "time": round(time.time() - self._t0, 3), **_clean(metrics)}
        self._fh.write(json.dumps(record) + "\n")
        for tracker in self.trackers:
            tracker.log(record["step"], record)
        return record

    def close(self) -> None:
        """Close the file and the trackers; closing again does nothing."""
        self._fh.close()
        trackers, self.trackers = self.trackers, []
        for tracker in trackers:
            tracker.close()

    def __enter__(self) -> MetricsWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _repair_last_line(path: Path) -> str:
    """End `path` with a newline: keep a cut-off last line that parses as JSON, else truncate it away. Returns the
    dropped text ('' when nothing was dropped)."""
    size = path.stat().st_size if path.is_file() else 0
    if size == 0:
        return ""
    with open(path, "rb+") as fh:
        fh.seek(size - 1)
        if fh.read(1) == b"\n":
            return ""
        fh.seek(max(0, size - (1 << 20)))   # a record is a few kB: the cut line lies in the last MiB
        chunk = fh.read()
        start = size - len(chunk) + chunk.rfind(b"\n") + 1
        tail = chunk[start - (size - len(chunk)):]
        try:
            json.loads(tail)
        except ValueError:
            fh.truncate(start)
            return tail.decode("utf-8", "replace")
        fh.write(b"\n")
        return ""


def read_metrics(path: str | Path) -> Iterator[dict[str, Any]]:
    """Yield the records of a JSONL metrics file, skipping a torn last line after a crash."""
    with open(path) as fh:
        for line in fh:
            line = line.strip()
            if not line:
                continue
            try:
                yield json.loads(line)
            except json.JSONDecodeError:
                continue

