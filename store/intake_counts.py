"""What the receivers took in, as the store holds it: for `idlehook status` and the page."""

from datetime import datetime, timedelta
from typing import NamedTuple

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from store import watch
from store.delivered import last_webhook_received_at
from store.ingest import StoreUnavailable, _reason
from store.models import Delivery, HandlerRun, UnrecognisedDelivery
from store.runs import ROUTE_HANDLER

_deliveries: sa.Table = Delivery.__table__  # type: ignore[attr-defined]
_runs: sa.Table = HandlerRun.__table__  # type: ignore[attr-defined]
_unrecognised: sa.Table = UnrecognisedDelivery.__table__  # type: ignore[attr-defined]


class IntakeCounts(NamedTuple):
    stored: int  # deliveries (webhook and reconciled), each event id once
    duplicates: int  # further copies of them, recorded as a count and never run again
    unrecognised: int  # signed bodies that were no known envelope, kept raw
    unrecognised_duplicates: int

    def as_dict(self) -> dict[str, int]:
        return {
            "stored": self.stored,
            "duplicates_suppressed": self.duplicates,
            "unrecognised": self.unrecognised,
            "unrecognised_duplicates": self.unrecognised_duplicates,
        }


def intake_counts(engine: Engine) -> IntakeCounts:
    try:
        with engine.connect() as conn:
            stored, duplicates = _totals(conn, _deliveries)
            unrecognised, again = _totals(conn, _unrecognised)
    except sa.exc.SQLAlchemyError as exc:
        raise StoreUnavailable(_reason(exc)) from exc
    return IntakeCounts(stored, duplicates, unrecognised, again)


def _totals(conn: Connection, table: sa.Table) -> tuple[int, int]:
    duplicates = sa.func.coalesce(sa.func.sum(table.c.duplicates), 0)
    count, extra = conn.execute(sa.select(sa.func.count(), duplicates)).one()
    return int(count), int(extra)


# The reconciler's mark (sessions/reconciler.py SILENCE): the earliest status change it read
# that no webhook reported, kept until a webhook arrives after it.
SILENCE_MARK = "silence"


class Liveness(NamedTuple):
    """Whether webhooks still arrive: the last one, and the reconciler's silence mark."""

    last_webhook_at: datetime | None  # received_at of the latest real (signed) delivery
    unreported_since: datetime | None  # a change no webhook reported, as of the last sweep

    def alarm(self, now: datetime, after: timedelta) -> bool:
        """The reconciler's silence alarm as of its last sweep: a change no webhook reported
        for `after`, and no webhook at all since."""
        since = self.unreported_since
        if since is None:
            return False
        if self.last_webhook_at is not None and self.last_webhook_at >= since:
            return False
        return now - since >= after


def liveness(engine: Engine) -> Liveness:
    return Liveness(last_webhook_received_at(engine), watch.read_mark(engine, SILENCE_MARK))


def routing_by_state(engine: Engine) -> dict[str, int]:
    """The `_route` runs (idlehook's routing step of each delivery) by state."""
    query = (
        sa.select(_runs.c.state, sa.func.count())
        .where(_runs.c.handler == ROUTE_HANDLER)
        .group_by(_runs.c.state)
    )
    with engine.connect() as conn:
        return {str(state): int(n) for state, n in conn.execute(query)}
