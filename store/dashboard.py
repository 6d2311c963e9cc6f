"""Read-only queries behind the operator page (console/web.py): small, bounded, indexed.

Every list is capped (`limit`); the chart's per-minute series are grouped in SQL so an hour of
heavy traffic is 60 rows, not every delivery. Nothing here writes.
"""

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine
from sqlmodel import Session, col, select

from store.journal import JournalStats
from store.models import (
    Delivery,
    HandlerRun,
    ReaperAction,
    ReaperActionKind,
    RunState,
    TrackedSession,
    UnrecognisedDelivery,
)
from store.reaper_actions import as_shown
from store.rejections import summary as rejection_summary
from store.runs import ROUTE_HANDLER
from store.sessions import count_unsaved, outcome_unsaved
from store.watch import EndpointRecord, read_endpoint


@dataclass(frozen=True)
class SessionRow:
    id: str
    status: str | None
    stop_reason: str | None
    route: str | None
    launched_by_us: bool
    cost_usd: float | None
    active_seconds: float | None
    token_usd: float | None
    created_at: datetime | None
    status_at: datetime | None
    result_captured: bool
    deleted: bool
    # The session's metadata as last seen: the page reads idlehook's stamped keys (the budget).
    metadata: dict[str, str] = field(default_factory=dict)
    # It ended and no route saved that outcome (failed runs nobody was told about).
    unsaved: bool = False
    interrupt_reason: str | None = None  # idlehook stopped its latest run: why


@dataclass(frozen=True)
class DeliveryRow:
    id: int
    event_type: str
    session_id: str | None
    received_at: datetime
    source: str
    duplicates: int


@dataclass(frozen=True)
class RunRow:
    id: int
    delivery_id: int
    session_id: str
    handler: str
    state: str
    attempts: int
    duration_ms: float | None
    last_error: str | None
    updated_at: datetime


@dataclass(frozen=True)
class ReaperRow:
    session_id: str
    action: str
    reason: str
    dry_run: bool
    at: datetime
    saving_usd_per_hour: float
    error: str | None


@dataclass(frozen=True)
class MinuteBucket:
    start: datetime
    deliveries: int
    runs: int
    mean_latency_ms: float | None


@dataclass(frozen=True)
class Totals:
    sessions: int
    total_cost_usd: float  # summed over tracked sessions (each one's is `cost_usd`)
    deliveries: int
    duplicates: int
    runs_by_state: dict[str, int]
    reaped: int
    saving_usd_per_hour: float
    interrupted: int = 0  # runs the reaper stopped (runaways, past deadline)
    unsaved_outcomes: int = 0  # ended sessions no route saved
    unrecognised: int = 0  # signed bodies that were no known envelope, kept raw
    rejected_last_hour: int = 0  # webhook requests refused (store/rejections.py)


@dataclass(frozen=True)
class Dashboard:
    now: datetime
    totals: Totals
    sessions: list[SessionRow] = field(default_factory=list)
    deliveries: list[DeliveryRow] = field(default_factory=list)
    runs: list[RunRow] = field(default_factory=list)
    dead_letters: list[RunRow] = field(default_factory=list)
    reaper: list[ReaperRow] = field(default_factory=list)
    chart: list[MinuteBucket] = field(default_factory=list)
    # The webhook endpoint's state as the reconciler last read it (None: not read).
    endpoint: EndpointRecord | None = None
    # This receiver's local journal (not the store's: the page adds it), None: no journal.
    journal: JournalStats | None = None


def load(engine: Engine, now: datetime, limit: int = 50) -> Dashboard:
    """Everything the page shows, read in one short-lived session."""
    with Session(engine) as db:
        conn = db.connection()
        return Dashboard(
            now=now,
            totals=_totals(db),
            sessions=_sessions(db, limit),
            deliveries=_deliveries(db, limit),
            runs=_runs(db, limit, states=None),
            dead_letters=_runs(db, limit, states=[RunState.DEAD]),
            reaper=_reaper(db, limit),
            chart=minute_buckets(
                now,
                _delivery_minutes(conn, now - timedelta(hours=1)),
                _run_minutes(conn, now - timedelta(hours=1)),
            ),
            endpoint=read_endpoint(conn),
        )


# -- pure ------------------------------------------------------------------------------------


def floor_minute(moment: datetime) -> datetime:
    return moment.astimezone(UTC).replace(second=0, microsecond=0)


def minute_buckets(
    now: datetime,
    deliveries: Iterable[tuple[datetime, int]],
    runs: Iterable[tuple[datetime, int, float | None]],
    minutes: int = 60,
) -> list[MinuteBucket]:
    """`minutes` consecutive one-minute buckets ending with the current one; gaps are zero."""
    last = floor_minute(now)
    starts = [last - timedelta(minutes=minutes - 1 - i) for i in range(minutes)]
    delivered: dict[datetime, int] = {}
    for start, count in deliveries:
        key = floor_minute(start)
        delivered[key] = delivered.get(key, 0) + count
    ran: dict[datetime, tuple[int, float]] = {}
    for start, count, mean in runs:
        key = floor_minute(start)
        total_count, total_ms = ran.get(key, (0, 0.0))
        ran[key] = (total_count + count, total_ms + (mean or 0.0) * count)
    buckets = []
    for start in starts:
        count, total_ms = ran.get(start, (0, 0.0))
        buckets.append(
            MinuteBucket(
                start=start,
                deliveries=delivered.get(start, 0),
                runs=count,
                mean_latency_ms=total_ms / count if count else None,
            )
        )
    return buckets


# -- queries ---------------------------------------------------------------------------------


def _totals(db: Session) -> Totals:
    sessions, cost = db.exec(
        select(sa.func.count(), sa.func.coalesce(sa.func.sum(TrackedSession.cost_usd), 0.0))
    ).one()
    deliveries, duplicates = db.exec(
        select(sa.func.count(), sa.func.coalesce(sa.func.sum(Delivery.duplicates), 0))
    ).one()
    by_state = {
        str(state): int(n)
        for state, n in db.exec(
            select(HandlerRun.state, sa.func.count())
            .where(col(HandlerRun.handler) != ROUTE_HANDLER)
            .group_by(col(HandlerRun.state))
        )
    }
    acted = {
        str(action): (int(n), float(saving or 0.0))
        for action, n, saving in db.exec(
            select(
                ReaperAction.action,
                sa.func.count(),
                sa.func.coalesce(sa.func.sum(ReaperAction.est_saving_usd_per_hour), 0.0),
            )
            .where(
                col(ReaperAction.action).in_(
                    [ReaperActionKind.DELETED, ReaperActionKind.INTERRUPTED]
                ),
                col(ReaperAction.dry_run).is_(False),
            )
            .group_by(col(ReaperAction.action))
        )
    }
    reaped, deleted_saving = acted.get(ReaperActionKind.DELETED, (0, 0.0))
    interrupted, interrupted_saving = acted.get(ReaperActionKind.INTERRUPTED, (0, 0.0))
    unsaved = count_unsaved(db.connection())
    return Totals(
        sessions=int(sessions),
        total_cost_usd=float(cost or 0.0),
        deliveries=int(deliveries),
        duplicates=int(duplicates),
        runs_by_state=by_state,
        reaped=reaped,
        saving_usd_per_hour=deleted_saving + interrupted_saving,
        interrupted=interrupted,
        unsaved_outcomes=unsaved,
        unrecognised=int(db.exec(select(sa.func.count()).select_from(UnrecognisedDelivery)).one()),
        rejected_last_hour=sum(
            r.last_hour for r in rejection_summary(db.connection(), datetime.now(UTC))
        ),
    )


def _sessions(db: Session, limit: int) -> list[SessionRow]:
    rows = db.exec(
        select(TrackedSession).order_by(col(TrackedSession.updated_at).desc()).limit(limit)
    )
    return [
        SessionRow(
            id=r.id,
            status=r.status,
            stop_reason=r.stop_reason,
            route=r.route,
            launched_by_us=r.launched_by_us,
            cost_usd=r.cost_usd,
            token_usd=r.token_usd,
            active_seconds=r.active_seconds,
            created_at=r.created_at,
            status_at=r.status_at,
            result_captured=r.result_captured_at is not None,
            deleted=r.deleted_at is not None,
            metadata=dict(r.session_metadata or {}),
            unsaved=outcome_unsaved(r),
            interrupt_reason=r.interrupt_reason,
        )
        for r in rows
    ]


def _deliveries(db: Session, limit: int) -> list[DeliveryRow]:
    # Not the body: it may hold whatever the agent wrote, and the page needs none of it.
    table = Delivery.__table__  # type: ignore[attr-defined]
    rows = db.connection().execute(
        sa.select(
            table.c.id,
            table.c.event_type,
            table.c.session_id,
            table.c.received_at,
            table.c.source,
            table.c.duplicates,
        )
        .order_by(table.c.id.desc())
        .limit(limit)
    )
    return [
        DeliveryRow(
            id=int(i or 0),
            event_type=t,
            session_id=s,
            received_at=at,
            source=src,
            duplicates=dup,
        )
        for i, t, s, at, src, dup in rows
    ]


def _runs(db: Session, limit: int, states: Sequence[str] | None) -> list[RunRow]:
    query = select(HandlerRun).where(col(HandlerRun.handler) != ROUTE_HANDLER)
    if states is not None:
        query = query.where(col(HandlerRun.state).in_([str(s) for s in states]))
    rows = db.exec(query.order_by(col(HandlerRun.updated_at).desc()).limit(limit))
    return [
        RunRow(
            id=int(r.id or 0),
            delivery_id=r.delivery_id,
            session_id=r.lane,
            handler=r.handler,
            state=r.state,
            attempts=r.attempts,
            duration_ms=r.duration_ms,
            last_error=(r.last_error or "")[:300] or None,
            updated_at=r.updated_at,
        )
        for r in rows
    ]


def _reaper(db: Session, limit: int) -> list[ReaperRow]:
    rows = db.exec(select(ReaperAction).order_by(col(ReaperAction.id).desc()).limit(limit))
    return [
        ReaperRow(
            session_id=r.session_id,
            action=as_shown(r.action, r.dry_run),  # a dry run's row never reads as done
            reason=r.reason,
            dry_run=r.dry_run,
            at=r.at,
            saving_usd_per_hour=r.est_saving_usd_per_hour,
            error=(r.error or "")[:300] or None,
        )
        for r in rows
    ]


def _minute(conn: Connection, column: Any) -> Any:
    """The column truncated to its minute, in the engine's own dialect."""
    if conn.dialect.name == "postgresql":
        return sa.func.date_trunc("minute", column)
    return sa.func.strftime("%Y-%m-%d %H:%M:00", column)


def _as_utc(value: Any) -> datetime:
    moment = value if isinstance(value, datetime) else datetime.fromisoformat(str(value))
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def _delivery_minutes(conn: Connection, since: datetime) -> list[tuple[datetime, int]]:
    table = Delivery.__table__  # type: ignore[attr-defined]
    minute = _minute(conn, table.c.received_at).label("minute")
    query = sa.select(minute, sa.func.count()).where(table.c.received_at >= since).group_by(minute)
    return [(_as_utc(m), int(n)) for m, n in conn.execute(query)]


def _run_minutes(conn: Connection, since: datetime) -> list[tuple[datetime, int, float | None]]:
    table = HandlerRun.__table__  # type: ignore[attr-defined]
    minute = _minute(conn, table.c.finished_at).label("minute")
    query = (
        sa.select(minute, sa.func.count(), sa.func.avg(table.c.duration_ms))
        .where(
            table.c.finished_at >= since,
            table.c.handler != ROUTE_HANDLER,
            table.c.duration_ms.is_not(None),
        )
        .group_by(minute)
    )
    return [
        (_as_utc(m), int(n), float(avg) if avg is not None else None)
        for m, n, avg in conn.execute(query)
    ]
