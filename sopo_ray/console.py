"""Console output that reads the same in a terminal, a file, a pipe and a job log.

On a terminal rich does what it always does (colour, the terminal's width, live views). Anywhere else (`> run.log`,
`ray job submit`, CI) rich would lay everything out 80 columns wide: long lines wrap mid-word and table cells are
cut to `0.12…`. There the console never wraps a printed line (one message, one line) and `print_table` sizes a
table to its content, so every number is printed in full whatever the width.
"""

from __future__ import annotations

import io
from typing import Any

from rich.console import Console
from rich.measure import Measurement
from rich.table import Table

LOG_WIDTH = 160  # layout width of panels and rules when the output is not a terminal


def make_console(**kwargs: Any) -> Console:
    """A rich Console for the project's commands: rich's own on a terminal; elsewhere lines are not wrapped
    (soft wrap) and the layout is LOG_WIDTH wide, without colour codes."""
    console = Console(**kwargs)
    if console.is_terminal:
        return console
    return Console(width=LOG_WIDTH, soft_wrap=True, **kwargs)


def table_width(table: Table) -> int:
    """Columns the table takes at its natural size (no cell shortened or wrapped)."""
    probe = Console(file=io.StringIO(), width=100_000)
    return Measurement.get(probe, probe.options, table).maximum


def print_table(console: Console, table: Table) -> None:
    """Print `table` with every cell whole: at the console's width when it fits, else at its own width (a terminal
    then wraps the long lines; a file or job log keeps them), never with cells cut to `…`."""
    width = table_width(table)
    if width <= console.width:
        console.print(table)
        return
    wide = Console(file=console.file, width=width, color_system=console.color_system,
                   force_terminal=console.is_terminal, soft_wrap=True)
    wide.print(table)
