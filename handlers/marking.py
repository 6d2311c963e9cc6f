"""session_marker(): how a handler records what it achieved on the tracked session.

One implementation for every caller: the worker gives it to plugins, and the reaper gives it to
the archive plugin when it saves a session itself.
"""

import asyncio
from collections.abc import Callable
from datetime import datetime
from functools import partial

from handlers.api import InterruptionReader, SessionMarker
from handlers.result import Interruption, SessionResult
from store.sessions import SessionStore, SessionUpdate


def session_marker(sessions: SessionStore, now: Callable[[], datetime]) -> SessionMarker:
    async def mark(
        session_id: str,
        *,
        result_captured: bool = False,
        transcript_saved: bool = False,
        deleted: bool = False,
        result: SessionResult | None = None,
    ) -> None:
        at = now()
        seen = _seen(result) if result is not None else None
        await asyncio.to_thread(
            partial(
                sessions.mark,
                session_id,
                at,
                result_captured=result_captured,
                transcript_saved=transcript_saved,
                deleted=deleted,
                seen=seen,
            )
        )

    return mark


def _seen(result: SessionResult) -> SessionUpdate:
    """The session's facts as the handler's result holds them (read from the API's session by
    handlers.result.build_result, and priced there). Not its status: the result may come from
    the delivery's shared read, older than a wake recorded since (a retried archive), and a
    status written now would stamp that old state as current; routing records status."""
    return SessionUpdate(
        stop_reason=result.stop_reason,
        agent_id=result.agent_id,
        agent_version=result.agent_version,
        deployment_id=result.deployment_id,
        title=result.title,
        metadata=result.metadata,
        created_at=result.created_at,
        active_seconds=result.active_seconds,
        cost_usd=result.cost_usd,
        token_usd=result.token_usd,
    )


def interruption_reader(sessions: SessionStore) -> InterruptionReader:
    async def read(session_id: str) -> Interruption | None:
        row = await asyncio.to_thread(sessions.get, session_id)
        if row is None or row.interrupted_at is None or row.interrupt_reason is None:
            return None
        return Interruption(at=row.interrupted_at, reason=row.interrupt_reason)

    return read
