"""The webhook path's rejections, as `idlehook status` shows them (owner of `webhook_rejections`).

A receiver counts refused requests in memory and calls `add` every few seconds with what it
counted: one short transaction per flush, whatever the number of requests, so a flood of bad
requests never becomes write load. Rows are per minute; those older than `FOLD_AFTER` are
folded into one row per reason and status at the epoch, so the table stays small however long
the flood lasts.
"""

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import IntegrityError

from store.models import WebhookRejection

_table: sa.Table = WebhookRejection.__table__  # type: ignore[attr-defined]

# (reason, status) -> how many were refused.
Counts = Mapping[tuple[str, int], int]
FOLD_AFTER = timedelta(days=1)
# The minute folded rows are kept at: before any real one.
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class RejectionCount:
    reason: str
    status: int
    last_hour: int
    total: int

    def as_dict(self) -> dict[str, int | str]:
        return {
            "reason": self.reason,
            "status": self.status,
            "last_hour": self.last_hour,
            "total": self.total,
        }


def minute_of(moment: datetime) -> datetime:
    return moment.replace(second=0, microsecond=0)


def add(engine: Engine, counts: Counts, now: datetime, *, fold: bool = False) -> None:
    """Add `counts` (refused at `now`) to this minute's rows; with `fold`, also fold minutes
    older than FOLD_AFTER into the epoch row. Several receivers may add at once."""
    if not counts and not fold:
        return
    minute = minute_of(now)
    for attempt in range(2):
        try:
            with engine.begin() as conn:
                for (reason, status), n in counts.items():
                    _bump(conn, minute, reason, status, n)
                if fold:
                    _fold(conn, minute - FOLD_AFTER)
            return
        except IntegrityError:  # another receiver inserted the same minute's row meanwhile
            if attempt:
                raise


def _bump(conn: Connection, minute: datetime, reason: str, status: int, n: int) -> None:
    key = (_table.c.minute == minute) & (_table.c.reason == reason) & (_table.c.status == status)
    done = conn.execute(_table.update().where(key).values(count=_table.c.count + n))
    if not done.rowcount:
        conn.execute(_table.insert().values(minute=minute, reason=reason, status=status, count=n))


def _fold(conn: Connection, before: datetime) -> None:
    old = (_table.c.minute < before) & (_table.c.minute > EPOCH)
    totals = conn.execute(
        sa.select(_table.c.reason, _table.c.status, sa.func.sum(_table.c.count))
        .where(old)
        .group_by(_table.c.reason, _table.c.status)
    ).all()
    if not totals:
        return
    conn.execute(_table.delete().where(old))
    for reason, status, n in totals:
        _bump(conn, EPOCH, str(reason), int(status), int(n))


def summary(source: Engine | Connection, now: datetime) -> list[RejectionCount]:
    """Per reason and status: refused in the last hour (whole minutes) and ever, most first.
    `source`: an engine, or the connection of a read in progress (the page's)."""
    since = minute_of(now) - timedelta(hours=1)
    recent = sa.func.sum(sa.case((_table.c.minute >= since, _table.c.count), else_=0))
    query = sa.select(
        _table.c.reason, _table.c.status, recent, sa.func.sum(_table.c.count)
    ).group_by(_table.c.reason, _table.c.status)
    if isinstance(source, Connection):
        rows = source.execute(query).all()
    else:
        with source.connect() as conn:
            rows = conn.execute(query).all()
    counts = [RejectionCount(str(r[0]), int(r[1]), int(r[2] or 0), int(r[3] or 0)) for r in rows]
    return sorted(counts, key=lambda c: (-c.last_hour, -c.total, c.status, c.reason))
