"""What the receivers took in, as the store holds it: for `idlehook status` and the page."""

from typing import NamedTuple

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from store.ingest import StoreUnavailable, _reason
from store.models import Delivery, UnrecognisedDelivery

_deliveries: sa.Table = Delivery.__table__  # type: ignore[attr-defined]
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
