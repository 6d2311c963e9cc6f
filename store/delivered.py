"""Which deliveries the store holds, as the reconciler asks: was a transition already delivered
(by a webhook or a synthetic delivery), its deterministic synthetic event id, and when the last
real webhook arrived. Reads only: store/ingest.py writes deliveries. Its cursors and what it
watches are store/watch.py.
"""

from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from store.models import Delivery, Source

_CHUNK = 500  # keeps IN (...) lists well under every driver's parameter limit


def _chunks(items: Sequence[str]) -> Iterable[Sequence[str]]:
    for start in range(0, len(items), _CHUNK):
        yield items[start : start + _CHUNK]


@dataclass(frozen=True)
class SeenDelivery:
    event_id: str
    event_type: str
    source: str
    received_at: datetime
    event_created_at: datetime | None
    id: int = 0  # the delivery's row id: one lane routes its deliveries in this order


def _seen(d: Delivery) -> SeenDelivery:
    return SeenDelivery(
        d.event_id, d.event_type, d.source, d.received_at, d.event_created_at, d.id or 0
    )


def deliveries_since(
    engine: Engine, session_ids: Sequence[str], event_types: Collection[str], since: datetime
) -> dict[str, list[SeenDelivery]]:
    """Deliveries (any source) of `event_types` per session, received or created at/after `since`.

    Two clocks, either will do: `event_created_at` is the API's, comparable with the transition
    time; `received_at` is ours, and covers a webhook whose envelope carried no time.
    """
    found: dict[str, list[SeenDelivery]] = {}
    with Session(engine) as db:
        for chunk in _chunks(list(session_ids)):
            query = select(Delivery).where(
                col(Delivery.session_id).in_(chunk),
                col(Delivery.event_type).in_(list(event_types)),
                sa.or_(
                    col(Delivery.received_at) >= since,
                    col(Delivery.event_created_at) >= since,
                ),
            )
            for d in db.exec(query):
                assert d.session_id is not None
                found.setdefault(d.session_id, []).append(_seen(d))
    return found


def seen_delivery(engine: Engine, event_id: str) -> SeenDelivery | None:
    with Session(engine) as db:
        row = db.exec(select(Delivery).where(Delivery.event_id == event_id)).first()
        return _seen(row) if row is not None else None


def transition_event_id(session_id: str, status: str, at: datetime) -> str:
    """The reconciler's synthetic delivery id: the same transition always gives the same id.

    `at` is the transition time (processed_at of the session's latest status event).
    """
    stamp = at.astimezone(UTC).strftime("%Y%m%dT%H%M%S%fZ")
    return f"rec_{session_id}_{status}_{stamp}"


def harvested(
    engine: Engine, session_id: str, status: str, at: datetime, *, before: str | None = None
) -> bool:
    """Did the reconciler already deliver this transition (so a late webhook is a duplicate)?

    With `before` (an event id), only a synthetic delivery stored ahead of that one counts: of
    two twins the first stored is routed first, and it is the one whose handlers run.
    """
    synthetic = seen_delivery(engine, transition_event_id(session_id, status, at))
    if synthetic is None or before is None:
        return synthetic is not None
    later = seen_delivery(engine, before)
    return later is None or synthetic.id < later.id


def has_reconciled_delivery(engine: Engine, session_id: str) -> bool:
    with Session(engine) as db:
        query = select(Delivery.id).where(
            Delivery.session_id == session_id, Delivery.source == str(Source.RECONCILE)
        )
        return db.exec(query.limit(1)).first() is not None


def newer_delivery(
    engine: Engine, session_id: str, created_after: datetime, event_types: Collection[str]
) -> bool:
    """Whether a delivery of one of `event_types` about the session, for a transition created
    after `created_after`, is stored. Transition times, not rows: a late retry of an older
    webhook, or a synthetic delivery for an older transition, is stored later but is not news."""
    with Session(engine) as db:
        query = select(Delivery.id).where(
            Delivery.session_id == session_id,
            col(Delivery.event_created_at) > created_after,
            col(Delivery.event_type).in_(list(event_types)),
        )
        return db.exec(query.limit(1)).first() is not None


def delivery_exists(engine: Engine, event_id: str) -> bool:
    with Session(engine) as db:
        query = select(Delivery.id).where(Delivery.event_id == event_id)
        return db.exec(query).first() is not None


def last_webhook_received_at(engine: Engine) -> datetime | None:
    """When the last real (signed, from Anthropic) delivery arrived."""
    with Session(engine) as db:
        query = select(sa.func.max(Delivery.received_at)).where(
            Delivery.source == str(Source.WEBHOOK)
        )
        value = db.exec(query).one()
    return value if isinstance(value, datetime) else None
