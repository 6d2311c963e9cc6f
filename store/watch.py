"""What the reconciler keeps in the store to know which sessions can have changed.

- `watched`: tracked sessions with what decides whether the reconciler must look at them again
  (`settled`), and the runtime and token cost last seen (the fingerprint a wake changes).
- rotating cursors, the earliest change no webhook reported (the silence alarm), and the
  webhook endpoint's state as last read: rows of `reconcile_cursors`, so no table of their own.

A session is *settled* when its latest status delivery (webhook or synthetic, by row id)
reports idle or terminated, nothing recorded since says it is busy again (the routing step or
the watchdog saw it running after that delivery came), and idlehook has not woken it since
(a follow-up, a custom tool result or a tool confirmation sent after that delivery came). A
deleted session is settled for good; every other tracked session is not.
"""

from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import IntegrityError

from store.models import Approval, Delivery, FollowUp, ReconcileCursor, ToolCall, TrackedSession

_tracked = TrackedSession.__table__  # type: ignore[attr-defined]
_deliveries = Delivery.__table__  # type: ignore[attr-defined]
_cursors = ReconcileCursor.__table__  # type: ignore[attr-defined]
_WAKERS = (
    FollowUp.__table__,  # type: ignore[attr-defined]
    ToolCall.__table__,  # type: ignore[attr-defined]
    Approval.__table__,  # type: ignore[attr-defined]
)
BUSY = ("running", "rescheduling")
_CHUNK = 500


@dataclass(frozen=True)
class Watched:
    id: str
    first_seen_at: datetime
    status: str | None  # as last recorded (routing, watchdog, launcher)
    active_seconds: float | None
    token_usd: float | None
    settled: bool
    # The type of its latest status delivery, if any.
    last_status_type: str | None


def _settled(status_types: Collection[str], quiet_types: Collection[str]) -> tuple[Any, Any]:
    """(the settled test as a 0/1 column, the FROM it needs): one definition for every query."""
    inner = _deliveries.alias("status_delivery")
    last = _deliveries.alias("last_status")
    last_id = (
        sa.select(sa.func.max(inner.c.id))
        .where(inner.c.session_id == _tracked.c.id, inner.c.event_type.in_(list(status_types)))
        .scalar_subquery()
    )
    busy_since = sa.and_(
        sa.func.coalesce(_tracked.c.status, "").in_(BUSY),
        _tracked.c.status_at.is_not(None),
        _tracked.c.status_at > last.c.received_at,
    )
    woken = [
        sa.exists().where(table.c.session_id == _tracked.c.id, table.c.sent_at > last.c.received_at)
        for table in _WAKERS
    ]
    test = sa.and_(
        last.c.id.is_not(None),
        last.c.event_type.in_(list(quiet_types)),
        sa.not_(busy_since),
        *(sa.not_(w) for w in woken),
    )
    settled = sa.case((test, 1), else_=0).label("settled")
    source = _tracked.outerjoin(last, last.c.id == last_id)
    return settled, (source, last)


def watched(
    engine: Engine,
    *,
    status_types: Collection[str],
    quiet_types: Collection[str],
    ids: Sequence[str] | None = None,
    unsettled_only: bool = False,
    after: datetime | None = None,
    upto: datetime | None = None,
    limit: int | None = None,
) -> list[Watched]:
    """Tracked, not deleted sessions (those in `ids`, or all), oldest first seen first.

    `after`/`upto` bound `first_seen_at` (exclusive/inclusive): the rotating cursor's window.
    """
    settled, (source, last) = _settled(status_types, quiet_types)
    base = (
        sa.select(
            _tracked.c.id,
            _tracked.c.first_seen_at,
            _tracked.c.status,
            _tracked.c.active_seconds,
            _tracked.c.token_usd,
            settled,
            last.c.event_type.label("last_status_type"),
        )
        .select_from(source)
        .where(_tracked.c.deleted_at.is_(None))
        .order_by(_tracked.c.first_seen_at, _tracked.c.id)
    )
    if unsettled_only:
        base = base.where(settled == 0)
    if after is not None:
        base = base.where(_tracked.c.first_seen_at > after)
    if upto is not None:
        base = base.where(_tracked.c.first_seen_at <= upto)
    if limit is not None:
        base = base.limit(limit)
    found: list[Watched] = []
    with engine.connect() as conn:
        for query in _by_ids(base, ids):
            found.extend(
                Watched(
                    id=row.id,
                    first_seen_at=row.first_seen_at,
                    status=row.status,
                    active_seconds=row.active_seconds,
                    token_usd=row.token_usd,
                    settled=bool(row.settled),
                    last_status_type=row.last_status_type,
                )
                for row in conn.execute(query)
            )
    return found


def _by_ids(query: Any, ids: Sequence[str] | None) -> Iterable[Any]:
    if ids is None:
        yield query
        return
    items = list(ids)
    for start in range(0, len(items), _CHUNK):
        yield query.where(_tracked.c.id.in_(items[start : start + _CHUNK]))


def with_status_deliveries(
    engine: Engine, ids: Sequence[str], status_types: Collection[str]
) -> set[str]:
    """Those of `ids` with at least one status delivery stored (their routing may be queued)."""
    found: set[str] = set()
    items = list(ids)
    with engine.connect() as conn:
        for start in range(0, len(items), _CHUNK):
            query = (
                sa.select(_deliveries.c.session_id)
                .where(
                    _deliveries.c.session_id.in_(items[start : start + _CHUNK]),
                    _deliveries.c.event_type.in_(list(status_types)),
                )
                .distinct()
            )
            found.update(str(sid) for sid in conn.execute(query).scalars())
    return found


# -- named instants (reconcile_cursors rows) ---------------------------------------------------


def read_mark(engine: Engine, name: str) -> datetime | None:
    with engine.connect() as conn:
        value = conn.execute(
            sa.select(_cursors.c.through).where(_cursors.c.name == name)
        ).scalar_one_or_none()
    return value if isinstance(value, datetime) else None


def set_mark(engine: Engine, name: str, through: datetime | None, at: datetime) -> None:
    """Set (None: remove) a named instant; it may move backwards (a rotating cursor starts
    over). Two sweeps racing: the last write wins."""
    for _ in range(2):
        try:
            with engine.begin() as conn:
                if through is None:
                    conn.execute(_cursors.delete().where(_cursors.c.name == name))
                    return
                done = conn.execute(
                    _cursors.update()
                    .where(_cursors.c.name == name)
                    .values(through=through, swept_at=at)
                )
                if not done.rowcount:
                    conn.execute(_cursors.insert().values(name=name, through=through, swept_at=at))
                return
        except IntegrityError:  # inserted by another sweep meanwhile: update it instead
            continue


def first_mark(engine: Engine, name: str, through: datetime, at: datetime) -> datetime:
    """The instant named `name`, set to `through` if it has none yet (the first writer wins)."""
    existing = read_mark(engine, name)
    if existing is not None:
        return existing
    try:
        with engine.begin() as conn:
            conn.execute(_cursors.insert().values(name=name, through=through, swept_at=at))
    except IntegrityError:
        pass
    return read_mark(engine, name) or through


# -- the webhook endpoint's state, as the organization webhooks API last reported it -----------

_ENDPOINT = "endpoint:"


@dataclass(frozen=True)
class EndpointRecord:
    state: str  # enabled | disabled | not_found
    reason: str  # disabled_reason (truncated), or what was not found
    since: datetime  # first seen in this state
    checked_at: datetime  # last read

    def as_dict(self) -> dict[str, Any]:
        return {
            "state": self.state,
            "reason": self.reason,
            "since": self.since.isoformat(),
            "checked_at": self.checked_at.isoformat(),
        }


def record_endpoint(engine: Engine, state: str, reason: str, at: datetime) -> EndpointRecord:
    """One row, `endpoint:<state>:<reason>` (the name is all a cursor row holds as text):
    `through` is when this state was first seen, `swept_at` when it was last read."""
    name = f"{_ENDPOINT}{state}:{reason}"[:60]
    since = at
    try:
        with engine.begin() as conn:
            current = conn.execute(
                sa.select(_cursors.c.name, _cursors.c.through).where(
                    _cursors.c.name.like(f"{_ENDPOINT}%")
                )
            ).all()
            since = next((row.through for row in current if row.name == name), at)
            conn.execute(_cursors.delete().where(_cursors.c.name.like(f"{_ENDPOINT}%")))
            conn.execute(_cursors.insert().values(name=name, through=since, swept_at=at))
    except IntegrityError:
        pass  # another sweep recorded the same state at the same moment
    state_, _, reason_ = name[len(_ENDPOINT) :].partition(":")
    return EndpointRecord(state_, reason_, since, at)


def endpoint_record(engine: Engine) -> EndpointRecord | None:
    """The endpoint's state as last read, or None (no admin key, or never read)."""
    with engine.connect() as conn:
        return read_endpoint(conn)


def read_endpoint(conn: Connection) -> EndpointRecord | None:
    """`endpoint_record` inside a transaction already open (SQLite: one at a time per file)."""
    row = conn.execute(
        sa.select(_cursors.c.name, _cursors.c.through, _cursors.c.swept_at)
        .where(_cursors.c.name.like(f"{_ENDPOINT}%"))
        .order_by(_cursors.c.swept_at.desc())
        .limit(1)
    ).first()
    if row is None:
        return None
    state, _, reason = str(row.name)[len(_ENDPOINT) :].partition(":")
    return EndpointRecord(state, reason, row.through, row.swept_at)
