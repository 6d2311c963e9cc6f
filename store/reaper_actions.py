"""The reaper's audit trail: one `reaper_actions` row per outcome of every run (this module is
the table's one writer). The session itself is marked deleted by store/sessions.py.

A dry run's rows say what it would have done (`would_delete`, `would_interrupt`,
`would_archive`); rows written before that said `deleted` with `dry_run` set, and are read back
as `would_...` (`as_shown`). Sessions the reaper kept are not recorded: only its report says so.
"""

from collections.abc import Sequence

from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from store.models import ReaperAction, ReaperActionKind

_WOULD: dict[str, str] = {
    ReaperActionKind.DELETED: ReaperActionKind.WOULD_DELETE,
    ReaperActionKind.INTERRUPTED: ReaperActionKind.WOULD_INTERRUPT,
    ReaperActionKind.ARCHIVED: ReaperActionKind.WOULD_ARCHIVE,
}


def as_shown(action: str, dry_run: bool) -> str:
    """The action as a person should read it: never `deleted` for a dry run's row."""
    return _WOULD.get(action, action) if dry_run else action


def record(engine: Engine, rows: Sequence[ReaperAction]) -> None:
    """One reaper run's outcomes (dry runs and skips too), in one transaction."""
    if not rows:
        return
    with Session(engine) as db:
        db.add_all(rows)
        db.commit()


def read(engine: Engine, *, run_id: str | None = None) -> list[ReaperAction]:
    """Every audit row, oldest first; with `run_id`, one run's."""
    query = select(ReaperAction).order_by(col(ReaperAction.id))
    if run_id is not None:
        query = query.where(ReaperAction.run_id == run_id)
    with Session(engine) as db:
        return list(db.exec(query))
