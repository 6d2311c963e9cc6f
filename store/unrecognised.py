"""Validly signed bodies that are no envelope idlehook knows, kept raw and never routed.

A Console test event, an event shape Anthropic adds tomorrow, even a body that is not JSON: it
verified, so it came from Anthropic, and answering it with a 4xx counts towards the endpoint
being disabled. It is stored here byte for byte, once per `webhook-id` (retries bump
`duplicates`), and no handler run is ever made for it. Rare by nature, so written in-process
(a thread off the event loop), not through the inbox's writer process.
"""

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import NamedTuple

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, Engine

from store.ingest import StoreUnavailable, _reason
from store.models import UnrecognisedDelivery

_table: sa.Table = UnrecognisedDelivery.__table__  # type: ignore[attr-defined]


class Unrecognised(NamedTuple):
    """One such delivery as the edge saw it; also what the journal keeps of it."""

    message_id: str  # the verified `webhook-id`
    received_at: float  # epoch seconds
    body: bytes  # as received: it may not even be UTF-8
    headers: dict[str, str]
    secret_index: int | None
    reason: str  # why it is no envelope (the parser's reason token)


def write(engine: Engine, items: Sequence[Unrecognised]) -> list[bool]:
    """Record `items` in one transaction; per item, whether it was new (not a retry).

    Raises StoreUnavailable, with the driver's error as its cause, when nothing was committed.
    """
    if not items:
        return []
    try:
        with engine.begin() as conn:
            # One statement per item: a batch may hold the same message twice, which one
            # multi-row upsert cannot do, and these are few.
            return [_upsert(conn, item) for item in items]
    except sa.exc.SQLAlchemyError as exc:
        raise StoreUnavailable(_reason(exc)) from exc


def _upsert(conn: Connection, item: Unrecognised) -> bool:
    insert = postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert
    received = datetime.fromtimestamp(item.received_at, UTC)
    stmt = insert(_table).values(
        message_id=item.message_id,
        reason=item.reason[:40],
        received_at=received,
        body=item.body,
        headers=item.headers,
        secret_index=item.secret_index,
        duplicates=0,
    )
    upsert = stmt.on_conflict_do_update(
        index_elements=[_table.c.message_id],
        set_={
            "duplicates": _table.c.duplicates + 1,
            "last_duplicate_at": stmt.excluded.received_at,
        },
    ).returning(_table.c.duplicates)
    # Inserted: the duplicates it was inserted with (0); a retry: one more than before.
    return int(conn.execute(upsert).scalar_one()) == 0
