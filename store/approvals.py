"""Tool uses held for confirmation: record, decide once, mark the confirmation sent, expire.

A decision is a compare-and-set from `pending`, so a CLI, an HTTP button, the expiry sweep and
the policy can race and exactly one wins. Sending the `user.tool_confirmation` happens after the
decision commits; `decided` rows whose send was lost are picked up again by the worker.
"""

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError

from store import sessions as tracked_sessions
from store.models import Approval, ApprovalState

_approvals = Approval.__table__  # type: ignore[attr-defined]


class Decision(StrEnum):
    ALLOW = "allow"
    DENY = "deny"


@dataclass(frozen=True)
class PendingApproval:
    """What a person needs to see to decide (the web page and `idlehook approvals` list it)."""

    id: int
    session_id: str
    tool_use_id: str
    tool_name: str
    input: dict[str, Any]
    requested_at: datetime
    expires_at: datetime | None


@dataclass(frozen=True)
class ApprovalView:
    id: int
    session_id: str
    tool_use_id: str
    tool_name: str
    input: dict[str, Any]
    agent_id: str | None
    state: str
    decision: str | None
    message: str | None
    decided_by: str | None
    requested_at: datetime
    expires_at: datetime | None
    decided_at: datetime | None
    sent_at: datetime | None
    notified_at: datetime | None

    def pending(self) -> PendingApproval:
        return PendingApproval(
            id=self.id,
            session_id=self.session_id,
            tool_use_id=self.tool_use_id,
            tool_name=self.tool_name,
            input=self.input,
            requested_at=self.requested_at,
            expires_at=self.expires_at,
        )


def _view(row: sa.Row[Any]) -> ApprovalView:
    m = row._mapping
    return ApprovalView(**{f: m[f] for f in ApprovalView.__dataclass_fields__})


def list_pending(engine: Engine, session_id: str | None = None) -> list[PendingApproval]:
    """Approvals still waiting for a person, oldest first."""
    query = sa.select(_approvals).where(_approvals.c.state == ApprovalState.PENDING.value)
    if session_id is not None:
        query = query.where(_approvals.c.session_id == session_id)
    with engine.connect() as conn:
        rows = conn.execute(query.order_by(_approvals.c.requested_at, _approvals.c.id)).all()
    return [_view(r).pending() for r in rows]


def get(engine: Engine, approval_id: int) -> ApprovalView | None:
    with engine.connect() as conn:
        row = conn.execute(sa.select(_approvals).where(_approvals.c.id == approval_id)).first()
    return None if row is None else _view(row)


def find(engine: Engine, tool_use_id: str, session_id: str | None = None) -> ApprovalView | None:
    query = sa.select(_approvals).where(_approvals.c.tool_use_id == tool_use_id)
    if session_id is not None:
        query = query.where(_approvals.c.session_id == session_id)
    with engine.connect() as conn:
        row = conn.execute(query).first()
    return None if row is None else _view(row)


def record(
    engine: Engine,
    *,
    session_id: str,
    tool_use_id: str,
    tool_name: str,
    input: dict[str, Any],
    agent_id: str | None,
    now: datetime,
    expires_at: datetime | None,
    decision: Decision | None = None,
    message: str | None = None,
    decided_by: str | None = None,
) -> tuple[ApprovalView, bool]:
    """Insert the held call (already decided when a policy settled it); (row, created).

    An existing row wins: a second notification about the same tool use changes nothing.
    """
    values: dict[str, Any] = {
        "session_id": session_id,
        "tool_use_id": tool_use_id,
        "tool_name": tool_name,
        "input": input,
        "agent_id": agent_id,
        "requested_at": now,
        "expires_at": expires_at,
        "state": ApprovalState.PENDING.value,
    }
    if decision is not None:
        values.update(
            state=ApprovalState.DECIDED.value,
            decision=decision.value,
            message=message,
            decided_by=decided_by,
            decided_at=now,
        )
    created = True
    try:
        with engine.begin() as conn:
            conn.execute(_approvals.insert().values(**values))
    except IntegrityError:
        created = False
    view = find(engine, tool_use_id)
    assert view is not None  # inserted above or by whoever won the race
    return view, created


def decide(
    engine: Engine,
    approval_id: int,
    decision: Decision,
    *,
    message: str | None,
    by: str,
    now: datetime,
) -> bool:
    """Settle a pending approval; False if it was no longer pending (someone else decided)."""
    with engine.begin() as conn:
        result = conn.execute(
            _approvals.update()
            .where(
                _approvals.c.id == approval_id,
                _approvals.c.state == ApprovalState.PENDING.value,
            )
            .values(
                state=ApprovalState.DECIDED.value,
                decision=decision.value,
                message=message if decision is Decision.DENY else None,
                decided_by=by,
                decided_at=now,
            )
        )
    return result.rowcount == 1


def mark_sent(engine: Engine, approval_id: int, now: datetime) -> None:
    with engine.begin() as conn:
        conn.execute(
            _approvals.update()
            .where(_approvals.c.id == approval_id)
            .values(state=ApprovalState.SENT.value, sent_at=now)
        )


def mark_notified(engine: Engine, approval_id: int, now: datetime) -> None:
    with engine.begin() as conn:
        conn.execute(
            _approvals.update().where(_approvals.c.id == approval_id).values(notified_at=now)
        )


def unsent(engine: Engine, session_id: str | None = None) -> list[ApprovalView]:
    """Decided approvals whose confirmation the API has not taken yet."""
    query = sa.select(_approvals).where(_approvals.c.state == ApprovalState.DECIDED.value)
    if session_id is not None:
        query = query.where(_approvals.c.session_id == session_id)
    with engine.connect() as conn:
        rows = conn.execute(query.order_by(_approvals.c.id)).all()
    return [_view(r) for r in rows]


def expire(engine: Engine, now: datetime, message: str) -> list[ApprovalView]:
    """Deny every pending approval past its expiry and ask the reaper to take its session.

    Returns the rows this call denied (a concurrent person's decision wins over expiry).
    """
    with engine.connect() as conn:
        ids = [
            r.id
            for r in conn.execute(
                sa.select(_approvals.c.id).where(
                    _approvals.c.state == ApprovalState.PENDING.value,
                    _approvals.c.expires_at.is_not(None),
                    _approvals.c.expires_at <= now,
                )
            )
        ]
    denied: list[ApprovalView] = []
    for approval_id in ids:
        if decide(engine, approval_id, Decision.DENY, message=message, by="expiry", now=now):
            view = get(engine, approval_id)
            assert view is not None
            denied.append(view)
    sessions = sorted({v.session_id for v in denied})
    if sessions:
        with engine.begin() as conn:
            tracked_sessions.request_reap(conn, sessions, now)
    return denied


def count_pending_by_session(engine: Engine) -> dict[str, int]:
    with engine.connect() as conn:
        rows = conn.execute(
            sa.select(_approvals.c.session_id, sa.func.count())
            .where(_approvals.c.state == ApprovalState.PENDING.value)
            .group_by(_approvals.c.session_id)
        ).all()
    return {r[0]: int(r[1]) for r in rows}
