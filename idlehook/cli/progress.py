"""A progress bar for long commands: on stderr, only on a terminal, only when there is progress.

`bar(...)` yields a `(done, total)` callback the work reports through, so the code doing the
work knows nothing about terminals. Nothing is drawn until the work reports a total of at least
`minimum` items: a single `idlehook start` or a reap of one session shows no bar that never
moves, and stdout (ids, tables, JSON) never has a bar drawn over it.
"""

import sys
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rich.console import Console
    from rich.progress import Progress, TaskID

Report = Callable[[int, int], None]
# Fewer items than this finish before a bar would tell anyone anything.
MINIMUM = 2


def _ignore(done: int, total: int) -> None:
    return None


@contextmanager
def bar(
    console: "Console | None",
    description: str,
    *,
    enabled: bool = True,
    minimum: int = MINIMUM,
) -> Iterator[Report]:
    """`console`: where to draw; None, or the stdout console a command prints on, means a
    console on stderr."""
    if not enabled:
        yield _ignore
        return
    out = _stderr_console() if console is None or _is_stdout(console) else console
    if not out.is_terminal:
        yield _ignore
        return
    with ExitStack() as stack:
        shown: list[tuple[Progress, TaskID]] = []

        def report(done: int, total: int) -> None:
            if not shown:
                if total < minimum:
                    return
                progress = stack.enter_context(_progress(out))
                shown.append((progress, progress.add_task(description, total=total)))
            progress, task = shown[0]
            progress.update(task, completed=done, total=total)

        yield report


def _is_stdout(console: "Console") -> bool:
    return console.file is sys.stdout or console.file is sys.__stdout__


def _stderr_console() -> "Console":
    from rich.console import Console

    return Console(stderr=True)


def _progress(console: "Console") -> "Progress":
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
    )

    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn())
    return Progress(*columns, TimeElapsedColumn(), console=console, transient=True)
