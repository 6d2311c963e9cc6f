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
    token_usd: float | None = None
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


# An ended session waiting on its caller is not an outcome yet: `answer` handles it.
_WAITING = "requires_action"


def _unsaved_outcome() -> Any:
    """Ended (idle or terminated), not deleted, not waiting, and nothing saved since it ended."""
    c = _sessions.c
    return sa.and_(
        c.status.in_(("idle", "terminated")),
        c.deleted_at.is_(None),
        sa.func.coalesce(c.stop_reason, "") != _WAITING,
        sa.or_(
            c.result_captured_at.is_(None),
            sa.and_(c.status_at.is_not(None), c.result_captured_at < c.status_at),
        ),
    )


def count_unsaved(conn: Connection) -> int:
    query = sa.select(sa.func.count()).select_from(_sessions).where(_unsaved_outcome())
    return int(conn.execute(query).scalar_one())


def unsaved_outcomes(engine: Engine, limit: int = 20) -> tuple[int, list[str]]:
    """How many ended sessions no route has saved, and the oldest few of their ids."""
    with engine.connect() as conn:
        count = count_unsaved(conn)
        if limit <= 0:
            return count, []
        ids = conn.execute(
            sa.select(_sessions.c.id)
            .where(_unsaved_outcome())
            .order_by(_sessions.c.status_at)
            .limit(limit)
        ).scalars()
        return count, [str(i) for i in ids]


def outcome_unsaved(row: TrackedSession) -> bool:
    """The same test as `_unsaved_outcome`, on a row already read."""
    if row.status not in ("idle", "terminated") or row.deleted_at is not None:
        return False
    if (row.stop_reason or "") == _WAITING:
        return False
    saved = row.result_captured_at
    return saved is None or (row.status_at is not None and saved < row.status_at)


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

    def record_interrupt(self, session_id: str, reason: str, now: datetime) -> None:
        """idlehook is about to send `user.interrupt`: the run will end `end_turn`, and this is
        how its result tells that apart from a run that finished."""
        extra = {"interrupted_at": now, "interrupt_reason": reason}
        self.record(session_id, SessionUpdate(extra=extra), now)

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
