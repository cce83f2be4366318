"""Ray's own output, out of the user's way: the run's log file gets all of it, the console each distinct line once.

Ray streams whatever its actors and Train workers write to stdout/stderr to the driver, which prints it behind
a `(RayTrainWorker pid=1234)` prefix in colour codes; Ray Train adds an INFO line per report (~2,000 characters
with every metric) and per checkpoint. With `log.verbose` off (the default):

- Ray Train logs at WARNING (`ray.train.LoggingConfig`): its checkpoint and worker-group INFO lines are not
  printed (Ray keeps all its Train logs in its session directory, logs/train/). Its warnings and errors still
  arrive. The per-report line escapes that level (Ray 2.60 logs it under a logger named by file path), so it
  is recognised by its text (`LOG_FILE_ONLY`) and kept off the console; each report's metrics are in
  metrics.jsonl. So is Ray core's error-level notice, at the start of every run, that Train's own
  `PreemptionWatcher` actor has restartable constructor arguments (ray-project/ray#53727): nothing a user of
  this trainer can act on.
- `RayOutput` takes the place of Ray's printer on the driver: every streamed line goes to `<run>/logs/ray.log`
  with its time and source; the console shows each distinct line once (numbers ignored, like Ray's own
  deduplication), behind a short `ray <Actor>:` tag; of a traceback only the exception it ends with.
  Autoscaler events still go through Ray's printer (its raw status dumps are not kept).
- The driver's own Ray logger is set to WARNING ("Started a local Ray instance" and similar stay quiet), and
  Ray's warning that a new local Ray enabled token authentication is dropped (`quiet_token_auth_notice`).

With `log.verbose` on, Ray prints as it always does (and the log file is still written).

The printer swap uses Ray's log dispatcher (`ray._private.ray_logging`), which has no public API; ray is pinned
in pyproject.toml and tests/test_output.py runs the swap against the real Ray.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape

RAY_LOG = Path("logs") / "ray.log"
RAY_PRINTER = "ray_print_logs"  # the name Ray registers its driver-side printer under
OUR_PRINTER = "sopo_ray_output"
LOG_FILE_ONLY = (
    re.compile(r"^Reporting training result \d+: TrainingReport\("),
    re.compile(r"Actor with class name: 'PreemptionWatcher' .* has constructor arguments in the object store"),
)
"""Ray lines for the log file only: Ray Train's per-report INFO line, which its log level does not hold back, and
Ray core's notice about Train's internal PreemptionWatcher actor."""


def train_logging(verbose: bool) -> Any:
    """Ray Train's LoggingConfig: INFO when verbose, else WARNING (no per-report and checkpoint lines)."""
    from ray.train import LoggingConfig

    return LoggingConfig(log_level="INFO" if verbose else "WARNING")


def driver_log_level(verbose: bool) -> int:
    """`ray.init(logging_level=...)` for the driver's own Ray logger."""
    return logging.INFO if verbose else logging.WARNING


TOKEN_AUTH_LOGGER = "ray._private.authentication.authentication_token_setup"
TOKEN_AUTH_ENABLED = "Token authentication is enabled for this Ray cluster"


def _not_token_auth_enabled(record: logging.LogRecord) -> bool:
    return not record.getMessage().startswith(TOKEN_AUTH_ENABLED)


def quiet_token_auth_notice() -> None:
    """Keep Ray's warning-level notice that a new local Ray turned token authentication on (Ray 2.5x+, at every
    start) off the console; its warning that authentication is *off* still prints."""
    auth_logger = logging.getLogger(TOKEN_AUTH_LOGGER)
    if _not_token_auth_enabled not in auth_logger.filters:
        auth_logger.addFilter(_not_token_auth_enabled)


def source_of(data: dict[str, Any]) -> str:
    """`ReplayQueue pid=123` (or a task's name, or `raylet`), plus `ip=` when the line came from another node."""
    pid = data.get("pid")
    name = data.get("actor_name") or data.get("task_name") or ""
    where = f"{name} pid={pid}" if name and pid not in ("raylet", "autoscaler") else str(pid)
    ip = data.get("ip")
    return f"{where}, ip={ip}" if ip and ip != data.get("localhost") else where


def session_logs() -> str:
    """Where this node's Ray session keeps its logs (Ray Train's, all levels, under train/)."""
    import ray

    node = getattr(ray._private.worker.global_worker, "node", None)
    return str(Path(node.get_session_dir_path()) / "logs") if node is not None else "the Ray session directory"


def canonical(line: str) -> str:
    """The line without its words that hold digits, so repeats that differ in ids, pids or times match."""
    return " ".join(word for word in line.split() if not any(c.isdigit() for c in word))


class RayOutput:
    """While entered: every line Ray streams to the driver is appended to `path`; the console gets each
    distinct line once (or, with `verbose`, Ray's own printing)."""

    def __init__(self, path: Path, console: Console, verbose: bool) -> None:
        self.path, self.console, self.verbose = Path(path), console, verbose
        self.lines = 0          # lines written to the log file
        self.shown = 0          # lines shown on the console (quiet mode)
        self._seen: set[str] = set()
        self._in_traceback: set[Any] = set()  # processes whose traceback is being streamed
        self._lock = threading.Lock()
        self._ray_printer: tuple[str, Any] | None = None
        self._fh: Any = None

    def __enter__(self) -> RayOutput:
        from ray._private.ray_logging import global_worker_stdstream_dispatcher as dispatcher

        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fh = open(self.path, "a", buffering=1)  # noqa: SIM115 - closed in __exit__
        self._fh.write(f"# {time.strftime('%Y-%m-%d %H:%M:%S')} Ray output of this run "
                       f"({'verbose' if self.verbose else 'quiet: Ray Train at WARNING'}); Ray's own logs: "
                       f"{session_logs()}\n")
        if not self.verbose:
            self._ray_printer = next((h for h in dispatcher.handlers if h[0] == RAY_PRINTER), None)
            dispatcher.remove_handler(RAY_PRINTER)
        dispatcher.add_handler(OUR_PRINTER, self.handle)
        return self

    def __exit__(self, *exc: object) -> None:
        from ray._private.ray_logging import global_worker_stdstream_dispatcher as dispatcher

        dispatcher.remove_handler(OUR_PRINTER)
        if self._ray_printer is not None and not any(h[0] == RAY_PRINTER for h in dispatcher.handlers):
            dispatcher.add_handler(*self._ray_printer)
        self._ray_printer = None
        with self._lock:
            self._fh.close()

    @property
    def hidden(self) -> int:
        """Lines that went to the log file only (repeats, and everything Ray's printer handled instead)."""
        return self.lines - self.shown

    def handle(self, data: dict[str, Any]) -> None:
        """One batch of lines from one process (called on Ray's log thread)."""
        lines = [line for line in data.get("lines", []) if line.strip()]
        if not lines:
            return
        if data.get("pid") == "autoscaler":  # status dumps; Ray's printer shows their events
            if self._ray_printer is not None:
                self._ray_printer[1](data)
            return
        source = source_of(data)
        stamp = time.strftime("%H:%M:%S")
        show = []
        with self._lock:
            if self._fh.closed:
                return
            for line in lines:
                self._fh.write(f"{stamp} ({source}) {line}\n")
            self.lines += len(lines)
            if self.verbose:
                return
            for line in self._console_lines(data.get("pid"), lines):
                key = canonical(line) or line
                if key not in self._seen:
                    self._seen.add(key)
                    show.append(line)
            self.shown += len(show)
        name = data.get("actor_name") or data.get("task_name") or str(data.get("pid"))
        for line in show:
            self.console.print(f"[dim]ray {escape(name)}:[/] {escape(line)}", highlight=False)

    def _console_lines(self, pid: Any, lines: list[str]) -> list[str]:
        """The lines worth the console: none of `LOG_FILE_ONLY`, and of a traceback only the exception
        it ends with (its frames stay in the log file; a traceback may span batches of one process)."""
        out = []
        for line in lines:
            if line.startswith("Traceback (most recent call last)"):
                self._in_traceback.add(pid)
            elif pid in self._in_traceback and line[:1].isspace():
                continue
            elif pid in self._in_traceback:
                self._in_traceback.discard(pid)
                out.append(f"{line}  (traceback in {self.path})")
            elif not any(pattern.search(line) for pattern in LOG_FILE_ONLY):
                out.append(line)
        return out

    def where(self) -> str:
        """One line for the end-of-run summary."""
        kept = f"; {self.hidden} of them only there" if not self.verbose and self.hidden else ""
        return f"{self.path} ({self.lines} lines from Ray{kept})"
