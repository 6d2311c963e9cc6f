"""Tracked-session writes the worker makes: facts seen on notifications, and what was done.

Upserts are portable (select, then insert or update; one retry on a racing insert) because the
launcher may insert the same row concurrently.
"""

from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import IntegrityError

from store.models import TrackedSession

_sessions = TrackedSession.__table__  # type: ignore[attr-defined]


@dataclass(frozen=True)
class SessionUpdate:
    """Facts to record; None leaves a column as it is."""

    status: str | None = None
    stop_reason: str | None = None
    agent_id: str | None = None
    agent_version: int | None = None
    environment_id: str | None = None
    deployment_id: str | None = None
    title: str | None = None
    metadata: dict[str, str] | None = None
    created_at: datetime | None = None
    active_seconds: float | None = None
    cost_usd: float | None = None
    webhook_at: datetime | None = None  # when a notification about it was handled
    extra: dict[str, Any] = field(default_factory=dict)

    def columns(self) -> dict[str, Any]:
        values = {k: v for k, v in asdict(self).items() if v is not None}
        values.pop("extra", None)
        values.update(self.extra)
        if "metadata" in values:
            values["session_metadata"] = values.pop("metadata")
        if "webhook_at" in values:
            values["last_webhook_at"] = values.pop("webhook_at")
        return values


def flag_values(
    now: datetime, *, result_captured: bool, transcript_saved: bool, deleted: bool
) -> dict[str, Any]:
    """The timestamp columns a handler's achievements set."""
    values: dict[str, Any] = {}
    if result_captured:
        values["result_captured_at"] = now
    if transcript_saved:
        values["transcript_saved_at"] = now
    if deleted:
        values["deleted_at"] = now
    return values


class SessionStore:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def record(self, session_id: str, update: SessionUpdate, now: datetime) -> None:
        values = update.columns()
        try:
            with self.engine.begin() as conn:
                self._upsert(conn, session_id, values, now)
        except IntegrityError:
            with self.engine.begin() as conn:
                self._upsert(conn, session_id, values, now)

    def mark(
        self,
        session_id: str,
        now: datetime,
        *,
        result_captured: bool = False,
        transcript_saved: bool = False,
        deleted: bool = False,
    ) -> None:
        values = flag_values(
            now, result_captured=result_captured, transcript_saved=transcript_saved, deleted=deleted
        )
        self.record(session_id, SessionUpdate(extra=values), now)

    def get(self, session_id: str) -> TrackedSession | None:
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(_sessions).where(_sessions.c.id == session_id)).first()
        if row is None:
            return None
        data = dict(row._mapping)
        data["session_metadata"] = data.pop("metadata")
        return TrackedSession.model_validate(data)

    @staticmethod
    def _upsert(conn: Connection, session_id: str, values: dict[str, Any], now: datetime) -> None:
        values = {**values}
        row = conn.execute(
            sa.select(_sessions.c.status).where(_sessions.c.id == session_id)
        ).first()
        status = values.get("status")
        if status is not None and (row is None or row.status != status):
            values["status_at"] = now
        if "session_metadata" in values:
            values["metadata"] = values.pop("session_metadata")
        if row is None:
            values.setdefault("metadata", {})
            conn.execute(
                _sessions.insert().values(
                    id=session_id,
                    launched_by_us=False,
                    first_seen_at=now,
                    updated_at=now,
                    **values,
                )
            )
            return
        conn.execute(
            _sessions.update().where(_sessions.c.id == session_id).values(updated_at=now, **values)
        )
