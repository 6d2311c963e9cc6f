"""Custom tool calls, recorded by tool-use id before they run: the at-most-once guard.

`claim` is the only way to start a call. It inserts the row (the unique id makes a second
inserter lose), or takes over a row whose owner's lease ran out, or says what is left to do.
`finish` is fenced on the owner, so a worker that lost its lease cannot overwrite the result of
the one that took over.
"""

from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError

from store.models import ToolCall, ToolCallState

_calls = ToolCall.__table__  # type: ignore[attr-defined]

INTERRUPTED = "The tool call was interrupted (the worker running it stopped) and was not retried."


class Next(StrEnum):
    RUN = "run"  # this caller owns the call now: run the tool, then `finish`
    SEND = "send"  # a result is recorded but not yet accepted: send it
    BUSY = "busy"  # another live owner is running it
    DONE = "done"  # the API has the result


@dataclass(frozen=True)
class ToolCallView:
    id: int
    custom_tool_use_id: str
    session_id: str
    tool_name: str
    input: dict[str, Any]
    state: str
    attempts: int
    owner: str | None
    lease_expires_at: datetime | None
    result: str | None
    is_error: bool
    started_at: datetime
    finished_at: datetime | None
    sent_at: datetime | None


@dataclass(frozen=True)
class Claim:
    next: Next
    call: ToolCallView
    interrupted: bool = False  # a dead owner's call was settled with the "interrupted" error


def _view(row: sa.Row[Any]) -> ToolCallView:
    m = row._mapping
    return ToolCallView(**{f: m[f] for f in ToolCallView.__dataclass_fields__})


def get(engine: Engine, custom_tool_use_id: str) -> ToolCallView | None:
    with engine.connect() as conn:
        row = conn.execute(
            sa.select(_calls).where(_calls.c.custom_tool_use_id == custom_tool_use_id)
        ).first()
    return None if row is None else _view(row)


def for_session(engine: Engine, session_id: str) -> list[ToolCallView]:
    with engine.connect() as conn:
        rows = conn.execute(
            sa.select(_calls).where(_calls.c.session_id == session_id).order_by(_calls.c.id)
        ).all()
    return [_view(r) for r in rows]


def claim(
    engine: Engine,
    *,
    custom_tool_use_id: str,
    session_id: str,
    tool_name: str,
    input: dict[str, Any],
    owner: str,
    now: datetime,
    lease: timedelta,
    idempotent: bool,
) -> Claim:
    """Record the call and take it, or report what state an existing record is in.

    A `started` row whose lease ran out belonged to a worker that died mid-run: an idempotent
    tool is taken over and run again; any other is settled with the "interrupted" error, since
    running it twice could repeat its side effects.
    """
    try:
        with engine.begin() as conn:
            conn.execute(
                _calls.insert().values(
                    custom_tool_use_id=custom_tool_use_id,
                    session_id=session_id,
                    tool_name=tool_name,
                    input=input,
                    state=ToolCallState.STARTED.value,
                    attempts=1,
                    owner=owner,
                    lease_expires_at=now + lease,
                    is_error=False,
                    started_at=now,
                )
            )
        call = get(engine, custom_tool_use_id)
        assert call is not None
        return Claim(Next.RUN, call)
    except IntegrityError:
        pass
    call = get(engine, custom_tool_use_id)
    assert call is not None  # the insert lost to it
    if call.state == ToolCallState.SENT:
        return Claim(Next.DONE, call)
    if call.state == ToolCallState.FINISHED:
        return Claim(Next.SEND, call)
    if call.owner == owner:
        return Claim(Next.RUN, call)
    if call.lease_expires_at is not None and call.lease_expires_at > now:
        return Claim(Next.BUSY, call)
    fence = (
        _calls.c.id == call.id,
        _calls.c.state == ToolCallState.STARTED.value,
        _calls.c.attempts == call.attempts,
    )
    if idempotent:
        values: dict[str, Any] = {
            "owner": owner,
            "lease_expires_at": now + lease,
            "attempts": call.attempts + 1,
        }
    else:
        values = {
            "state": ToolCallState.FINISHED.value,
            "result": INTERRUPTED,
            "is_error": True,
            "finished_at": now,
            "owner": owner,
        }
    with engine.begin() as conn:
        taken = conn.execute(_calls.update().where(*fence).values(**values)).rowcount == 1
    fresh = get(engine, custom_tool_use_id)
    assert fresh is not None
    if not taken:  # someone else took it over first: ask again what is left
        return claim(
            engine,
            custom_tool_use_id=custom_tool_use_id,
            session_id=session_id,
            tool_name=tool_name,
            input=input,
            owner=owner,
            now=now,
            lease=lease,
            idempotent=idempotent,
        )
    if idempotent:
        return Claim(Next.RUN, fresh)
    return Claim(Next.SEND, fresh, interrupted=True)


def renew(engine: Engine, call_id: int, owner: str, now: datetime, lease: timedelta) -> bool:
    with engine.begin() as conn:
        result = conn.execute(
            _calls.update()
            .where(
                _calls.c.id == call_id,
                _calls.c.owner == owner,
                _calls.c.state == ToolCallState.STARTED.value,
            )
            .values(lease_expires_at=now + lease)
        )
    return result.rowcount == 1


def finish(
    engine: Engine, call_id: int, owner: str, result: str, is_error: bool, now: datetime
) -> bool:
    """Record the result; False if this owner no longer holds the call (its result is dropped)."""
    with engine.begin() as conn:
        updated = conn.execute(
            _calls.update()
            .where(
                _calls.c.id == call_id,
                _calls.c.owner == owner,
                _calls.c.state == ToolCallState.STARTED.value,
            )
            .values(
                state=ToolCallState.FINISHED.value,
                result=result,
                is_error=is_error,
                finished_at=now,
                lease_expires_at=None,
            )
        )
    return updated.rowcount == 1


def mark_sent(engine: Engine, call_id: int, now: datetime) -> None:
    with engine.begin() as conn:
        conn.execute(
            _calls.update()
            .where(_calls.c.id == call_id)
            .values(state=ToolCallState.SENT.value, sent_at=now)
        )


def count_unsent_by_session(engine: Engine) -> dict[str, int]:
    """Calls recorded but not yet answered, per session (shown by `idlehook sessions`)."""
    with engine.connect() as conn:
        rows = conn.execute(
            sa.select(_calls.c.session_id, sa.func.count())
            .where(_calls.c.state != ToolCallState.SENT.value)
            .group_by(_calls.c.session_id)
        ).all()
    return {r[0]: int(r[1]) for r in rows}
