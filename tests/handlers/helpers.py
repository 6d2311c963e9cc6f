"""Test helpers: store deliveries the way ingest does (Delivery + one `_route` run), a clock."""

import json
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from store.models import Delivery, HandlerRun, RunState

_deliveries = Delivery.__table__  # type: ignore[attr-defined]
_runs = HandlerRun.__table__  # type: ignore[attr-defined]


def add_delivery(
    engine: Engine,
    event_type: str = "session.status_idled",
    session_id: str | None = "sesn_1",
    *,
    event_id: str | None = None,
    now: datetime | None = None,
) -> int:
    """Insert a notification as ingest would; returns the delivery id."""
    now = now or datetime.now(UTC)
    event_id = event_id or f"wevt_{uuid.uuid4().hex[:16]}"
    body = {
        "type": "event",
        "id": event_id,
        "created_at": now.isoformat(),
        "data": {"type": event_type, "id": session_id or "x", "organization_id": "org_1"},
    }
    with engine.begin() as conn:
        delivery_id = conn.execute(
            _deliveries.insert()
            .values(
                event_id=event_id,
                event_type=event_type,
                resource_id=session_id or "x",
                session_id=session_id,
                event_created_at=now,
                received_at=now,
                source="webhook",
                body=json.dumps(body),
                headers={},
                duplicates=0,
            )
            .returning(_deliveries.c.id)
        ).scalar_one()
        conn.execute(
            _runs.insert().values(
                delivery_id=delivery_id,
                lane=session_id or f"delivery:{event_id}",
                position=0,
                handler="_route",
                state=RunState.PENDING.value,
                attempts=0,
                next_attempt_at=now,
                created_at=now,
                updated_at=now,
            )
        )
    return int(delivery_id)


def add_run(
    engine: Engine,
    delivery_id: int,
    handler: str,
    position: int,
    lane: str,
    now: datetime | None = None,
) -> int:
    now = now or datetime.now(UTC)
    with engine.begin() as conn:
        return int(
            conn.execute(
                _runs.insert()
                .values(
                    delivery_id=delivery_id,
                    lane=lane,
                    position=position,
                    handler=handler,
                    state=RunState.PENDING.value,
                    attempts=0,
                    next_attempt_at=now,
                    created_at=now,
                    updated_at=now,
                )
                .returning(_runs.c.id)
            ).scalar_one()
        )


def run_states(engine: Engine) -> dict[tuple[int, str], str]:
    with engine.connect() as conn:
        rows = conn.execute(sa.select(_runs.c.delivery_id, _runs.c.handler, _runs.c.state))
        return {(r.delivery_id, r.handler): r.state for r in rows}


@dataclass
class Clock:
    """A clock tests move by hand; starts at real now so the database rows look normal."""

    current: datetime = field(default_factory=lambda: datetime.now(UTC))

    def now(self) -> datetime:
        return self.current

    def advance(self, seconds: float) -> None:
        self.current += timedelta(seconds=seconds)
