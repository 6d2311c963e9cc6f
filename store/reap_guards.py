"""What the reaper's guards read of a batch of sessions, in one go: their tracked rows and their
unfinished handler runs (a session with work still queued is never deleted).
"""

from collections.abc import Iterable, Sequence

import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from store.models import UNFINISHED_STATES, HandlerRun, TrackedSession

_CHUNK = 500  # keeps IN (...) lists well under every driver's parameter limit


def _chunks(items: Sequence[str]) -> Iterable[Sequence[str]]:
    for start in range(0, len(items), _CHUNK):
        yield items[start : start + _CHUNK]


def tracked_sessions(engine: Engine, ids: Sequence[str]) -> dict[str, TrackedSession]:
    found: dict[str, TrackedSession] = {}
    with Session(engine, expire_on_commit=False) as db:
        for chunk in _chunks(list(ids)):
            for row in db.exec(select(TrackedSession).where(col(TrackedSession.id).in_(chunk))):
                found[row.id] = row
    return found


def unfinished_runs(engine: Engine, ids: Sequence[str]) -> dict[str, int]:
    """Unfinished handler runs (pending, running, failed-and-retrying) per session lane."""
    counts: dict[str, int] = {}
    states = [str(s) for s in UNFINISHED_STATES]
    with Session(engine) as db:
        for chunk in _chunks(list(ids)):
            query = (
                select(HandlerRun.lane, sa.func.count())
                .where(col(HandlerRun.lane).in_(chunk), col(HandlerRun.state).in_(states))
                .group_by(col(HandlerRun.lane))
            )
            for lane, count in db.exec(query):
                counts[lane] = int(count)
    return counts
