"""The reaper's audit trail: one `reaper_actions` row per outcome of every run (this module is
the table's one writer). The session itself is marked deleted by store/sessions.py.
"""

from collections.abc import Sequence

from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from store.models import ReaperAction


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
