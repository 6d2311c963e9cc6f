"""Tables and output for the CLI: no id is ever cut.

On a terminal a table fits its width and folds a long cell onto more lines (an id folds whole
characters, never an ellipsis); piped or redirected it goes as wide as its widest row, one line
per row, so `grep`, `awk` and copy-paste get every id whole. Import this, not rich, in commands:
rich is imported when a table is drawn, not when `idlehook --help` runs.
"""

import os
import sys
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rich.console import Console
    from rich.table import Table

# Piped output has no width; wider than any row we print, so rich never folds or cuts one.
PIPED_WIDTH = 100_000


def console(*, stderr: bool = False, width: int | None = None) -> "Console":
    """A console for a command's output: the terminal's width on a terminal, unbounded when
    piped (`COLUMNS` still wins, as for every tool)."""
    from rich.console import Console

    stream = sys.stderr if stderr else sys.stdout
    # COLUMNS is the terminal's convention every tool honours, not idlehook configuration.
    columns = os.environ.get("COLUMNS")  # noqa: TID251
    if width is None and not stream.isatty() and not columns:
        width = PIPED_WIDTH
    return Console(stderr=stderr, width=width, highlight=False, soft_wrap=False)


def table(
    *columns: str, title: str | None = None, ids: tuple[str, ...] = ("id",), **options: Any
) -> "Table":
    """A table whose every column folds instead of cutting (rich's default is an ellipsis).

    Columns named in `ids` (and any whose name ends in "id" or is "session") are kept whole on
    one line while the others can give way: they fold only when the ids alone overflow."""
    from rich.table import Table

    t = Table(title=title, **options)
    for name in columns:
        whole = name in ids or name.endswith("id") or name == "session"
        t.add_column(name, overflow="fold", no_wrap=whole)
    return t


def print_table(t: "Table", out: "Console | None" = None) -> None:
    """Print `t`; piped, trimmed to its own width rather than padded to PIPED_WIDTH."""
    out = out or console()
    for column in t.columns:
        if column.no_wrap:
            # An id column is as wide as its widest id: the other columns give way first.
            cells = [len(str(cell)) for cell in column.cells]
            column.min_width = max([len(str(column.header)), *cells])
    if out.width >= PIPED_WIDTH:
        from rich.measure import Measurement

        needed = Measurement.get(out, out.options, t).maximum
        out.width = max(needed, 20)
    else:
        # The ids alone are wider than the terminal: the line goes wider (the terminal wraps
        # it, the text keeps every id whole) rather than rich cutting an id; the other columns
        # keep their header's width (up to 8) to fold into.
        ids = sum(c.min_width or 0 for c in t.columns if c.no_wrap)
        others = sum(min(8, len(str(c.header)) or 1) for c in t.columns if not c.no_wrap)
        needed = ids + others + 3 * len(t.columns) + 1  # padding and rules
        if needed > out.width:
            out.width = needed
    out.print(t)
