"""The `rate_slots` rows: the next free request slot per rate class, shared by every process.

Plain SQL for sessions/pacing.py's Pacer. Times are epoch seconds as floats, so a slot is taken
with arithmetic in one atomic UPDATE ... RETURNING: two callers, in one process or in ten, never
get the same one.
"""

from collections.abc import Callable

import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlmodel import col

from store.engine import is_sqlite
from store.models import RateSlot


def ensure(engine: Engine, kind: str) -> None:
    """Create `kind`'s row (free from the epoch) unless it exists."""
    with engine.begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO rate_slots (kind, next_at) VALUES (:kind, 0) "
                "ON CONFLICT (kind) DO NOTHING"
            ),
            {"kind": kind},
        )


def take(engine: Engine, kind: str, width: float, now: Callable[[], float]) -> float:
    """Reserve `width` seconds of `kind`'s budget; return where the reservation starts.

    The row must exist (`ensure`). An idle class banks nothing: the reservation starts no
    earlier than now.
    """
    with engine.begin() as conn:
        # The clock is read inside the transaction: on SQLite the write lock is already held,
        # so a caller that queued for the lock is never handed a slot in the past.
        at = now()
        next_at = conn.execute(
            sa.update(RateSlot)
            .where(col(RateSlot.kind) == kind)
            .values(next_at=_later(engine, at) + width)
            .returning(col(RateSlot.next_at))
        ).scalar_one()
    return float(next_at) - width


def push_back(engine: Engine, kind: str, until: float) -> None:
    """No slot of `kind` before `until`; a later next slot is kept as it is."""
    with engine.begin() as conn:
        conn.execute(
            sa.update(RateSlot)
            .where(col(RateSlot.kind) == kind)
            .values(next_at=_later(engine, until))
        )


def next_free(engine: Engine, kind: str) -> float | None:
    """When `kind`'s next slot starts (None: no row yet): for status pages and tests."""
    with engine.connect() as conn:
        value = conn.execute(
            sa.select(col(RateSlot.next_at)).where(col(RateSlot.kind) == kind)
        ).scalar_one_or_none()
    return None if value is None else float(value)


def _later(engine: Engine, at: float) -> sa.ColumnElement[float]:
    """The row's next slot or `at`, whichever is later."""
    # SQLite's two-argument max() is PostgreSQL's greatest().
    if is_sqlite(engine):
        return sa.func.max(col(RateSlot.next_at), at)
    return sa.func.greatest(col(RateSlot.next_at), at)
