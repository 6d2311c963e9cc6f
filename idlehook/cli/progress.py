"""A rich progress bar for long commands, shown only on a terminal and never with `--json`.

`bar(...)` yields a `(done, total)` callback the work reports through, so the code doing the
work knows nothing about terminals.
"""

from collections.abc import Callable, Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

Report = Callable[[int, int], None]


def _ignore(done: int, total: int) -> None:
    return None


@contextmanager
def bar(console: Console, description: str, *, enabled: bool = True) -> Iterator[Report]:
    if not enabled or not console.is_terminal:
        yield _ignore
        return
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=console, transient=True) as progress:
        task = progress.add_task(description, total=None)

        def report(done: int, total: int) -> None:
            progress.update(task, completed=done, total=total)

        yield report
