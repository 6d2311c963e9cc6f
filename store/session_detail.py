"""Everything the store knows about one session, for `idlehook show` and the session page.

Read-only: each table is still written by its one owner (ARCHITECTURE.md); this module only
selects, in one transaction, so the parts agree with each other.
"""

from dataclasses import dataclass
from datetime import datetime
from typing import TypeVar

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from store.approvals import ApprovalView
from store.followups import FollowUpView
from store.models import (
    Approval,
    Delivery,
    FollowUp,
    HandlerRun,
    Launch,
    ReaperAction,
    RunState,
    ToolCall,
    TrackedSession,
)
from store.sessions import tracked_from_row
from store.tool_calls import ToolCallView

_deliveries = Delivery.__table__  # type: ignore[attr-defined]
_runs = HandlerRun.__table__  # type: ignore[attr-defined]
_approvals = Approval.__table__  # type: ignore[attr-defined]
_launches = Launch.__table__  # type: ignore[attr-defined]
_reaper = ReaperAction.__table__  # type: ignore[attr-defined]
_sessions = TrackedSession.__table__  # type: ignore[attr-defined]
_tool_calls = ToolCall.__table__  # type: ignore[attr-defined]
_follow_ups = FollowUp.__table__  # type: ignore[attr-defined]
_V = TypeVar("_V")

ROUTE = "_route"  # the routing step's handler name (position 0 of every delivery)


@dataclass(frozen=True)
class RunLine:
    """One handler run on one of the session's deliveries."""

    id: int
    delivery_id: int
    event_id: str
    handler: str
    position: int
    state: str
    attempts: int
    last_error: str | None
    updated_at: datetime
    finished_at: datetime | None


@dataclass(frozen=True)
class DeliveryLine:
    """One notification about the session, and what routing made of it."""

    id: int
    event_id: str
    event_type: str
    source: str  # webhook | reconcile
    received_at: datetime
    event_created_at: datetime | None
    duplicates: int
    route_state: str | None  # the `_route` run's state; None: it was pruned
    routed_to: tuple[str, ...]  # the handlers routing chose, in order

    @property
    def routing(self) -> str:
        """The routing decision, as a person reads it."""
        if self.route_state is None:
            return "unknown (pruned)"
        if self.route_state != RunState.SUCCEEDED:
            return f"routing {self.route_state}"
        return "to " + ", ".join(self.routed_to) if self.routed_to else "to nothing"


@dataclass(frozen=True)
class ReaperLine:
    id: int
    run_id: str
    action: str
    reason: str
    dry_run: bool
    at: datetime
    error: str | None


@dataclass(frozen=True)
class LaunchLine:
    id: int
    idempotency_key: str
    state: str
    attempts: int
    error: str | None
    created_at: datetime
    finished_at: datetime | None


@dataclass(frozen=True)
class SessionDetail:
    session_id: str
    tracked: TrackedSession | None  # None: idlehook has no row for it
    launch: LaunchLine | None
    deliveries: list[DeliveryLine]
    runs: list[RunLine]
    approvals: list[ApprovalView]
    tool_calls: list[ToolCallView]
    follow_ups: list[FollowUpView]
    reaper_actions: list[ReaperLine]

    @property
    def known(self) -> bool:
        """Anything at all in the store about it."""
        return self.tracked is not None or any(
            (self.launch, self.deliveries, self.approvals, self.tool_calls, self.follow_ups)
        )


def load(engine: Engine, session_id: str, *, limit: int = 200) -> SessionDetail:
    """The session's row and history; the newest `limit` deliveries (and their runs)."""
    with engine.connect() as conn:
        deliveries, runs = _deliveries_and_runs(conn, session_id, limit)
        return SessionDetail(
            session_id=session_id,
            tracked=_tracked(conn, session_id),
            launch=_launch(conn, session_id),
            deliveries=deliveries,
            runs=runs,
            approvals=_approvals_of(conn, session_id),
            tool_calls=_views(conn, _tool_calls, session_id, ToolCallView),
            follow_ups=_views(conn, _follow_ups, session_id, FollowUpView),
            reaper_actions=_reaper_of(conn, session_id),
        )


def _tracked(conn: Connection, session_id: str) -> TrackedSession | None:
    row = conn.execute(sa.select(_sessions).where(_sessions.c.id == session_id)).first()
    return None if row is None else tracked_from_row(row)


def _launch(conn: Connection, session_id: str) -> LaunchLine | None:
    c = _launches.c
    row = conn.execute(
        sa.select(
            c.id, c.idempotency_key, c.state, c.attempts, c.error, c.created_at, c.finished_at
        )
        .where(c.session_id == session_id)
        .order_by(c.id)
    ).first()
    return None if row is None else LaunchLine(**row._mapping)


def _deliveries_and_runs(
    conn: Connection, session_id: str, limit: int
) -> tuple[list[DeliveryLine], list[RunLine]]:
    d = _deliveries.c
    rows = conn.execute(
        sa.select(
            d.id,
            d.event_id,
            d.event_type,
            d.source,
            d.received_at,
            d.event_created_at,
            d.duplicates,
        )
        .where(d.session_id == session_id)
        .order_by(d.received_at.desc(), d.id.desc())
        .limit(limit)
    ).all()
    rows = list(reversed(rows))
    ids = [r.id for r in rows]
    event_ids = {r.id: r.event_id for r in rows}
    r = _runs.c
    runs = [
        RunLine(
            id=row.id,
            delivery_id=row.delivery_id,
            event_id=event_ids[row.delivery_id],
            handler=row.handler,
            position=row.position,
            state=row.state,
            attempts=row.attempts,
            last_error=row.last_error,
            updated_at=row.updated_at,
            finished_at=row.finished_at,
        )
        for row in conn.execute(
            sa.select(
                r.id,
                r.delivery_id,
                r.handler,
                r.position,
                r.state,
                r.attempts,
                r.last_error,
                r.updated_at,
                r.finished_at,
            )
            .where(r.delivery_id.in_(ids))
            .order_by(r.delivery_id, r.position)
        ).all()
        if ids
    ]
    by_delivery: dict[int, list[RunLine]] = {}
    for run in runs:
        by_delivery.setdefault(run.delivery_id, []).append(run)
    deliveries = []
    for row in rows:
        own = by_delivery.get(row.id, [])
        route = next((x for x in own if x.handler == ROUTE), None)
        deliveries.append(
            DeliveryLine(
                **row._mapping,
                route_state=route.state if route else None,
                routed_to=tuple(x.handler for x in own if x.handler != ROUTE),
            )
        )
    return deliveries, runs


def _approvals_of(conn: Connection, session_id: str) -> list[ApprovalView]:
    rows = conn.execute(
        sa.select(_approvals)
        .where(_approvals.c.session_id == session_id)
        .order_by(_approvals.c.requested_at, _approvals.c.id)
    ).all()
    fields = ApprovalView.__dataclass_fields__
    return [ApprovalView(**{f: row._mapping[f] for f in fields}) for row in rows]


def _views(conn: Connection, table: sa.Table, session_id: str, view: type[_V]) -> list[_V]:
    """Rows as the owning module's view dataclass (its fields are column names)."""
    query = sa.select(table).where(table.c.session_id == session_id).order_by(table.c.id)
    fields = view.__dataclass_fields__  # type: ignore[attr-defined]
    return [view(**{f: row._mapping[f] for f in fields}) for row in conn.execute(query).all()]


def _reaper_of(conn: Connection, session_id: str) -> list[ReaperLine]:
    c = _reaper.c
    rows = conn.execute(
        sa.select(c.id, c.run_id, c.action, c.reason, c.dry_run, c.at, c.error)
        .where(c.session_id == session_id)
        .order_by(c.at, c.id)
    ).all()
    return [ReaperLine(**row._mapping) for row in rows]
