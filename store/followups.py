"""Follow-up messages, recorded by (session, idempotency key) before they are sent.

`claim` is the only way to start a send. It inserts the row (the unique key makes a second
inserter lose), or takes over a row nobody holds any more, or says what is left to do. A row
moves recorded -> sending -> sent; every write after a claim is fenced on the claim's token, so
a sender that lost its claim cannot overwrite the outcome of the one that took over.

A `sending` row nobody holds is the trace of a sender that died between its send and its mark:
whoever claims it next must look for the message in the session's events before sending again.
"""

from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import IntegrityError

from store import sessions as tracked_sessions
from store.models import FollowUp, FollowUpState

_rows = FollowUp.__table__  # type: ignore[attr-defined]


class Next(StrEnum):
    SEND = "send"  # this caller holds the row: nothing of it reached the API, send it
    RECOVER = "recover"  # this caller holds the row, but an earlier send may have landed: look
    DONE = "done"  # already sent: nothing to do
    BUSY = "busy"  # another live sender holds it
    CONFLICT = "conflict"  # the key was used for a different message to this session


@dataclass(frozen=True)
class FollowUpView:
    id: int
    session_id: str
    idempotency_key: str
    message: str
    state: str
    owner: str | None
    lease_expires_at: datetime | None
    attempts: int
    first_attempt_at: datetime | None
    event_id: str | None
    deadline: datetime | None
    allowance_seconds: float | None
    error: str | None
    created_at: datetime
    updated_at: datetime
    sent_at: datetime | None


@dataclass(frozen=True)
class Claim:
    next: Next
    row: FollowUpView


def _view(row: sa.Row[Any]) -> FollowUpView:
    m = row._mapping
    return FollowUpView(**{f: m[f] for f in FollowUpView.__dataclass_fields__})


def get(engine: Engine, session_id: str, idempotency_key: str) -> FollowUpView | None:
    with engine.connect() as conn:
        return _get(conn, session_id, idempotency_key)


def _get(conn: Connection, session_id: str, idempotency_key: str) -> FollowUpView | None:
    row = conn.execute(
        sa.select(_rows).where(
            _rows.c.session_id == session_id, _rows.c.idempotency_key == idempotency_key
        )
    ).first()
    return None if row is None else _view(row)


def for_session(engine: Engine, session_id: str) -> list[FollowUpView]:
    with engine.connect() as conn:
        rows = conn.execute(
            sa.select(_rows).where(_rows.c.session_id == session_id).order_by(_rows.c.id)
        ).all()
    return [_view(r) for r in rows]


def claim(
    engine: Engine,
    *,
    session_id: str,
    idempotency_key: str,
    message: str,
    token: str,
    now: datetime,
    lease: timedelta,
) -> Claim:
    """Record the follow-up and take it, or report what state an existing record is in."""
    try:
        with engine.begin() as conn:
            conn.execute(
                _rows.insert().values(
                    session_id=session_id,
                    idempotency_key=idempotency_key,
                    message=message,
                    state=FollowUpState.RECORDED.value,
                    owner=token,
                    lease_expires_at=now + lease,
                    attempts=0,
                    created_at=now,
                    updated_at=now,
                )
            )
            fresh = _get(conn, session_id, idempotency_key)
        assert fresh is not None
        return Claim(Next.SEND, fresh)
    except IntegrityError:
        pass  # the key is known: see what state it is in
    current = get(engine, session_id, idempotency_key)
    for _ in range(3):
        assert current is not None  # the insert lost to it, and rows are never deleted
        if current.message != message:
            return Claim(Next.CONFLICT, current)
        if current.state == FollowUpState.SENT:
            return Claim(Next.DONE, current)
        if current.lease_expires_at is not None and current.lease_expires_at > now:
            return Claim(Next.BUSY, current)
        # Nobody holds it: take it over, fenced on the holder we saw (tokens are never reused).
        owner = _rows.c.owner
        held_by = owner.is_(None) if current.owner is None else owner == current.owner
        with engine.begin() as conn:
            taken = conn.execute(
                _rows.update()
                .where(_rows.c.id == current.id, _rows.c.state == current.state, held_by)
                .values(owner=token, lease_expires_at=now + lease, updated_at=now)
            ).rowcount
            current = _get(conn, session_id, idempotency_key)
        if taken == 1:
            assert current is not None
            unknown = current.state == FollowUpState.SENDING
            return Claim(Next.RECOVER if unknown else Next.SEND, current)
        # Someone else took it (or finished it) first: look again at what is left.
    assert current is not None
    return Claim(Next.BUSY, current)


def _fenced(conn: Connection, row_id: int, token: str, **values: Any) -> bool:
    result = conn.execute(
        _rows.update().where(_rows.c.id == row_id, _rows.c.owner == token).values(**values)
    )
    return bool(result.rowcount == 1)


def begin_send(
    engine: Engine,
    row_id: int,
    token: str,
    *,
    now: datetime,
    lease: timedelta,
    deadline: datetime | None,
    allowance_seconds: float | None,
) -> bool:
    """Record that a send is about to go out (and the deadline it sets); False if the claim
    was lost. From here until `mark_sent` or `release`, the outcome is unknown to anyone else."""
    with engine.begin() as conn:
        return _fenced(
            conn,
            row_id,
            token,
            state=FollowUpState.SENDING.value,
            attempts=_rows.c.attempts + 1,
            first_attempt_at=sa.func.coalesce(_rows.c.first_attempt_at, now),
            lease_expires_at=now + lease,
            deadline=deadline,
            allowance_seconds=allowance_seconds,
            error=None,
            updated_at=now,
        )


def mark_sent(
    engine: Engine,
    row_id: int,
    token: str,
    *,
    session_id: str,
    event_id: str | None,
    now: datetime,
) -> bool:
    """The API took the message: record it, and in the same transaction tell the tracked
    session it has a new run coming (no reap requested, no interruption of ours pending).

    Its status is left for the webhooks: they say when the run starts and ends."""
    with engine.begin() as conn:
        done = _fenced(
            conn,
            row_id,
            token,
            state=FollowUpState.SENT.value,
            event_id=event_id,
            sent_at=now,
            owner=None,
            lease_expires_at=None,
            error=None,
            updated_at=now,
        )
        if done:
            tracked_sessions.expect_new_run(conn, session_id, now)
    return done


def release(
    engine: Engine, row_id: int, token: str, *, now: datetime, error: str, outcome_unknown: bool
) -> bool:
    """Give the row up after a failure. `outcome_unknown`: a send may have landed, so the row
    stays `sending` and the next claimer looks for it first; else nothing of it reached the
    API and it goes back to `recorded`."""
    values: dict[str, Any] = {"owner": None, "lease_expires_at": None, "error": error[:2000]}
    if not outcome_unknown:
        values["state"] = FollowUpState.RECORDED.value
    with engine.begin() as conn:
        return _fenced(conn, row_id, token, updated_at=now, **values)


def latest_allowance(engine: Engine, session_id: str) -> float | None:
    """The run allowance the session's most recent follow-up planned, if any did."""
    with engine.connect() as conn:
        value = conn.execute(
            sa.select(_rows.c.allowance_seconds)
            .where(_rows.c.session_id == session_id, _rows.c.allowance_seconds.is_not(None))
            .order_by(_rows.c.id.desc())
            .limit(1)
        ).scalar()
    return None if value is None else float(value)


def sent_event_ids(engine: Engine, session_id: str) -> set[str]:
    """Messages already accounted for: a recovery search must not claim one of these."""
    with engine.connect() as conn:
        rows = conn.execute(
            sa.select(_rows.c.event_id).where(
                _rows.c.session_id == session_id, _rows.c.event_id.is_not(None)
            )
        ).all()
    return {str(r[0]) for r in rows}
