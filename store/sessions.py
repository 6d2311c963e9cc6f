"""`tracked_sessions`, and every write to it: the one module that writes that table.

A row is a session idlehook launched or has heard of. Each way it learns something is one named
operation: `record_launch` (the launcher created it), `record` (seen on a notification or a
read), `record_poll` (the watchdog fetched it), `record_interrupt` (idlehook is about to stop its
run), `mark` (a handler saved its result or transcript), `request_reap`, `expect_new_run` (a
follow-up was sent), `rearm` (a new deadline) and `mark_deleted`. Each takes the caller's
connection, so a store module can make it part of its own transaction (a launch completed and
its session tracked, a follow-up marked sent and the session's reap request cleared, commit
together); `SessionStore` runs each in a transaction of its own for everyone else.

Rules kept here once: `status_at` moves when, and only when, the status changes; the first
`deleted_at` seen stands; a row inserted by two writers at once becomes one row (the loser's
insert is rolled back to a savepoint and applied as an update).
"""

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import IntegrityError

from store.models import TrackedSession

_sessions = TrackedSession.__table__  # type: ignore[attr-defined]

# SessionUpdate field -> column, where the names differ.
_COLUMN = {"webhook_at": "last_webhook_at"}


@dataclass(frozen=True)
class SessionUpdate:
    """Facts about a session to record; None leaves a column as it is."""

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
    cost_usd: float | None = None  # runtime + tokens, under the configured billing model
    token_usd: float | None = None  # usage.list_cost alone
    webhook_at: datetime | None = None  # when a notification about it was handled
    idle_for_seconds: float | None = None  # the matching route's `idle_for`
    deleted_at: datetime | None = None  # the API said it is gone

    @classmethod
    def from_api(
        cls,
        session: Any,
        *,
        stop_reason: str | None = None,
        cost_usd: float | None = None,
        token_usd: float | None = None,
        webhook_at: datetime | None = None,
        idle_for_seconds: float | None = None,
    ) -> "SessionUpdate":
        """The one place the API's session object (the SDK's, or anything shaped like it) is
        copied into a store update. The stop reason is read from the transcript, and the cost is
        priced by the caller (handlers.billing): neither is on the object, and the store prices
        nothing."""
        agent = getattr(session, "agent", None)
        usage = getattr(session, "usage", None)
        active = getattr(usage, "active_seconds", None)
        metadata = getattr(session, "metadata", None)
        return cls(
            status=session.status,
            stop_reason=stop_reason,
            agent_id=getattr(agent, "id", None),
            agent_version=getattr(agent, "version", None),
            environment_id=getattr(session, "environment_id", None),
            deployment_id=getattr(session, "deployment_id", None),
            title=getattr(session, "title", None),
            metadata={str(k): str(v) for k, v in (metadata or {}).items()},
            created_at=_aware(getattr(session, "created_at", None)),
            active_seconds=float(active) if active is not None else None,
            cost_usd=cost_usd,
            token_usd=token_usd,
            webhook_at=webhook_at,
            idle_for_seconds=idle_for_seconds,
        )

    def only(self, *names: str) -> "SessionUpdate":
        """This update reduced to the named facts (a caller that may record no more)."""
        return SessionUpdate(**{name: getattr(self, name) for name in names})

    def columns(self) -> dict[str, Any]:
        return {_COLUMN.get(k, k): v for k, v in asdict(self).items() if v is not None}


@dataclass(frozen=True)
class Launched:
    """A session the launcher created: what only it knows, with what the create call said."""

    session_id: str
    owner: str
    route: str | None
    deadline: datetime | None
    seen: SessionUpdate  # SessionUpdate.from_api(the create response)


def _aware(value: Any) -> datetime | None:
    if not isinstance(value, datetime):
        return None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value


# -- the operations (each inside the caller's transaction) -----------------------------------


def record(
    conn: Connection,
    session_id: str,
    update: SessionUpdate,
    now: datetime,
    *,
    if_tracked: bool = False,
) -> bool:
    """Seen on a notification or a read: a session idlehook had not heard of gets a row, unless
    `if_tracked` (then False: no row)."""
    return _write(conn, session_id, update.columns(), now, create=not if_tracked)


def record_poll(conn: Connection, session_id: str, update: SessionUpdate, now: datetime) -> bool:
    """The watchdog fetched it. Only a tracked session: False if there is no row."""
    return _write(conn, session_id, {**update.columns(), "polled_at": now}, now, create=False)


def record_launch(conn: Connection, launched: Launched, now: datetime) -> None:
    """The launcher created it. A notification may have tracked it first and moved its status
    on: the create response is older news, so its status only fills in an unknown one."""
    values = {
        **launched.seen.columns(),
        "launched_by_us": True,
        "owner": launched.owner,
        "route": launched.route,
        "deadline": launched.deadline,
    }
    _write(conn, launched.session_id, values, now, status_if_unknown=True)


def record_interrupt(conn: Connection, session_id: str, reason: str, now: datetime) -> None:
    """idlehook is about to send `user.interrupt`: the run will end `end_turn`, and this is how
    its result tells that apart from a run that finished."""
    _write(conn, session_id, {"interrupted_at": now, "interrupt_reason": reason}, now)


def mark(
    conn: Connection,
    session_id: str,
    now: datetime,
    *,
    result_captured: bool = False,
    transcript_saved: bool = False,
    deleted: bool = False,
    seen: SessionUpdate | None = None,
) -> None:
    """What a handler achieved (result or transcript saved, session deleted), with the session's
    facts as it read them (`seen`)."""
    values = seen.columns() if seen is not None else {}
    if result_captured:
        values["result_captured_at"] = now
    if transcript_saved:
        values["transcript_saved_at"] = now
    if deleted:
        values["deleted_at"] = now
    _write(conn, session_id, values, now)


def request_reap(conn: Connection, session_ids: Sequence[str], now: datetime) -> None:
    """Hand tracked sessions to the reaper; the earliest request stands."""
    if not session_ids:
        return
    conn.execute(
        _sessions.update()
        .where(_sessions.c.id.in_(list(session_ids)), _sessions.c.reap_requested_at.is_(None))
        .values(reap_requested_at=now, updated_at=now)
    )


def expect_new_run(conn: Connection, session_id: str, now: datetime) -> None:
    """A follow-up was sent: a new run is coming, so no reap request and no interruption of ours
    is pending any more. Its status is left for the webhooks: they say when the run starts."""
    _write(
        conn,
        session_id,
        {"reap_requested_at": None, "interrupted_at": None, "interrupt_reason": None},
        now,
        create=False,
    )


def rearm(
    conn: Connection,
    session_id: str,
    *,
    deadline: datetime,
    metadata: dict[str, str] | None,
    now: datetime,
) -> None:
    """Move a tracked session's deadline (and its copy of the metadata) ahead of a new run.
    A session idlehook does not track stays untracked."""
    values: dict[str, Any] = {"deadline": deadline}
    if metadata is not None:
        values["metadata"] = dict(metadata)
    _write(conn, session_id, values, now, create=False)


def mark_deleted(
    conn: Connection, session_id: str, at: datetime, *, track_untracked: bool = False
) -> None:
    """The session is gone (deleted, or a 404). `track_untracked`: a session idlehook never
    tracked gets a row too, so the reaper's delete of it is kept."""
    _write(conn, session_id, {"deleted_at": at}, at, create=track_untracked)


def _write(
    conn: Connection,
    session_id: str,
    values: dict[str, Any],
    now: datetime,
    *,
    create: bool = True,
    status_if_unknown: bool = False,
) -> bool:
    """Insert or update one row under the table's rules; False: no row, and `create` was off."""
    row = conn.execute(
        sa.select(_sessions.c.status, _sessions.c.deleted_at).where(_sessions.c.id == session_id)
    ).first()
    if row is None and not create:
        return False
    columns = dict(values)
    status = columns.get("status")
    if status is not None:
        if status_if_unknown and row is not None and row.status is not None:
            del columns["status"]
        elif row is None or row.status != status:
            columns["status_at"] = now
    if row is not None and row.deleted_at is not None:
        columns.pop("deleted_at", None)
    if row is not None:
        conn.execute(
            _sessions.update().where(_sessions.c.id == session_id).values(updated_at=now, **columns)
        )
        return True
    insert = _sessions.insert().values(
        **{"launched_by_us": False, "metadata": {}, **columns},
        id=session_id,
        first_seen_at=now,
        updated_at=now,
    )
    try:
        with conn.begin_nested():
            conn.execute(insert)
    except IntegrityError:
        # Another writer inserted it meanwhile (its commit made us wait): update that row.
        return _write(conn, session_id, values, now, status_if_unknown=status_if_unknown)
    return True


# -- reads -------------------------------------------------------------------------------------

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


@dataclass(frozen=True)
class SessionFilter:
    """Which tracked sessions to list. Each list matches any of its values; every field given
    must match, and so must every `metadata` pair."""

    status: Sequence[str] = ()
    stop_reason: Sequence[str] = ()
    agent: Sequence[str] = ()  # `agent_01`, or `agent_01:3` for one version
    owner: Sequence[str] = ()
    metadata: Mapping[str, str] = field(default_factory=dict)
    include_deleted: bool = False


def _filtered(query: Any, f: SessionFilter) -> Any:
    c = _sessions.c
    if not f.include_deleted:
        query = query.where(c.deleted_at.is_(None))
    if f.status:
        query = query.where(c.status.in_(list(f.status)))
    if f.stop_reason:
        query = query.where(c.stop_reason.in_(list(f.stop_reason)))
    if f.owner:
        query = query.where(c.owner.in_(list(f.owner)))
    if f.agent:
        agents = []
        for item in f.agent:
            agent_id, _, version = item.partition(":")
            match = c.agent_id == agent_id
            if version:
                match = sa.and_(match, c.agent_version == int(version))
            agents.append(match)
        query = query.where(sa.or_(*agents))
    for key, value in f.metadata.items():
        # JSON path on both engines (SQLite json_extract, PostgreSQL ->>), compared as text.
        query = query.where(c["metadata"][key].as_string() == value)
    return query


def list_tracked(
    engine: Engine, f: SessionFilter | None = None, *, limit: int = 100
) -> list[TrackedSession]:
    """Tracked sessions matching `f`, newest first (by creation, else first sighting)."""
    c = _sessions.c
    query = _filtered(sa.select(_sessions), f or SessionFilter()).order_by(
        sa.func.coalesce(c.created_at, c.first_seen_at).desc(), c.id
    )
    with engine.connect() as conn:
        rows = conn.execute(query.limit(limit)).all()
    return [tracked_from_row(row) for row in rows]


def tracked_from_row(row: sa.Row[Any]) -> TrackedSession:
    """A `tracked_sessions` row read with `select(table)`, as the model."""
    data = dict(row._mapping)
    data["session_metadata"] = data.pop("metadata")
    return TrackedSession.model_validate(data)


class SessionStore:
    """The operations above, each in a transaction of its own, for callers outside `store/`."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def record(
        self, session_id: str, update: SessionUpdate, now: datetime, *, if_tracked: bool = False
    ) -> bool:
        with self.engine.begin() as conn:
            return record(conn, session_id, update, now, if_tracked=if_tracked)

    def record_poll(self, session_id: str, update: SessionUpdate, now: datetime) -> bool:
        with self.engine.begin() as conn:
            return record_poll(conn, session_id, update, now)

    def record_interrupt(self, session_id: str, reason: str, now: datetime) -> None:
        with self.engine.begin() as conn:
            record_interrupt(conn, session_id, reason, now)

    def mark(
        self,
        session_id: str,
        now: datetime,
        *,
        result_captured: bool = False,
        transcript_saved: bool = False,
        deleted: bool = False,
        seen: SessionUpdate | None = None,
    ) -> None:
        with self.engine.begin() as conn:
            mark(
                conn,
                session_id,
                now,
                result_captured=result_captured,
                transcript_saved=transcript_saved,
                deleted=deleted,
                seen=seen,
            )

    def request_reap(self, session_ids: Sequence[str], now: datetime) -> None:
        with self.engine.begin() as conn:
            request_reap(conn, session_ids, now)

    def rearm(
        self,
        session_id: str,
        *,
        deadline: datetime,
        metadata: dict[str, str] | None,
        now: datetime,
    ) -> None:
        with self.engine.begin() as conn:
            rearm(conn, session_id, deadline=deadline, metadata=metadata, now=now)

    def mark_deleted(self, session_id: str, at: datetime, *, track_untracked: bool = False) -> None:
        with self.engine.begin() as conn:
            mark_deleted(conn, session_id, at, track_untracked=track_untracked)

    def get(self, session_id: str) -> TrackedSession | None:
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(_sessions).where(_sessions.c.id == session_id)).first()
        return None if row is None else tracked_from_row(row)
