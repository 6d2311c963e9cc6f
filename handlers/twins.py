"""One status transition delivered twice: by its webhook and by the reconciler's synthetic
delivery (sessions/reconciler.py). Only the first stored of the two runs handlers.

`covers` (pure) says whether a delivery reports a transition; the reconciler asks it before
writing a synthetic delivery, and the routing step asks `late_duplicate` of every status
delivery, which routes a twin stored second to no handlers.
"""

import asyncio
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import anthropic
from anthropic import AsyncAnthropic
from sqlalchemy.engine import Engine

from handlers.events import NOTIFIED_AS, STATUS_TYPES, TYPES_OF_STATUS
from store import delivered
from store.delivered import transition_event_id
from store.models import Source

# A webhook's envelope time and the event's processed_at come from different code paths.
CLOCK_SKEW = timedelta(seconds=1)
_STATUS_OF_TYPE = {t: status for status, types in TYPES_OF_STATUS.items() for t in types}
# The event stream's status events (not webhook types), and the status each one leaves.
_STATUS_OF_EVENT = {
    "session.status_idle": "idle",
    "session.status_running": "running",
    "session.status_terminated": "terminated",
}


def covers(
    deliveries: Sequence[delivered.SeenDelivery], status: str, at: datetime
) -> delivered.SeenDelivery | None:
    """A delivery reporting `status` at or after the transition at `at`, if any (pure).

    A webhook received after the transition covers it (it is thin: its handlers read the
    session as it is by then), and so does one whose envelope time is at or after it, give or
    take `CLOCK_SKEW`. A synthetic delivery carries the transition time itself and covers
    exactly that transition or a later one: an earlier rest's never covers a later one, however
    close they are or however our clock and the API's differ.
    """
    wanted = TYPES_OF_STATUS[status]
    for d in deliveries:
        if d.event_type not in wanted:
            continue
        synthetic = d.source == str(Source.RECONCILE)
        if not synthetic and d.received_at >= at:
            return d
        skew = timedelta(0) if synthetic else CLOCK_SKEW
        if d.event_created_at is not None and d.event_created_at >= at - skew:
            return d
    return None


def _covered_before(engine: Engine, session_id: str, event_type: str, event_id: str) -> bool:
    """Did a real webhook stored ahead of this synthetic delivery cover its transition?"""
    synthetic = delivered.seen_delivery(engine, event_id)
    if synthetic is None or synthetic.event_created_at is None:
        return False
    status, at = _STATUS_OF_TYPE[event_type], synthetic.event_created_at
    seen = delivered.deliveries_since(
        engine, [session_id], TYPES_OF_STATUS[status], at - CLOCK_SKEW
    )
    earlier = [
        d
        for d in seen.get(session_id, [])
        if d.source == str(Source.WEBHOOK) and d.id < synthetic.id
    ]
    return covers(earlier, status, at) is not None


async def _latest_transition(
    client: AsyncAnthropic, session_id: str
) -> tuple[str, datetime] | None:
    """The session's latest status change in its event list (status, when): one read, paced
    by the client's transport like every call the worker makes."""
    page = await client.beta.sessions.events.list(
        session_id,
        order="desc",
        limit=1,
        types=["session.status_idle", "session.status_running", "session.status_terminated"],
    )
    event = page.data[0] if page.data else None
    status = _STATUS_OF_EVENT.get(str(event.type)) if event is not None else None
    at: datetime | None = getattr(event, "processed_at", None)
    if status is None or at is None:
        return None
    return status, at.replace(tzinfo=UTC) if at.tzinfo is None else at.astimezone(UTC)


async def late_duplicate(
    client: AsyncAnthropic,
    engine: Engine,
    *,
    session_id: str | None,
    event_type: str,
    event_id: str,
    source: str,
) -> bool:
    """True when this status delivery has a twin stored ahead of it that covers the same state.

    The routing step calls this for every delivery and routes a duplicate to no handlers. Of
    two twins, the first stored is routed first (one lane, in delivery order) and runs them.

    A real webhook (source "webhook"): the session's current transition is read from the API;
    if a synthetic delivery for exactly that transition was stored first, the state this
    webhook could make the handlers see has been handled (the webhook is thin, handlers read
    the current session), so handling it again would run them twice.

    A synthetic one (source "reconcile"): a real webhook of the matching type, stored first,
    already covers its transition (it came while the sweep was writing this one).
    """
    if session_id is None or event_type not in STATUS_TYPES:
        return False
    if source == str(Source.RECONCILE):
        return await asyncio.to_thread(_covered_before, engine, session_id, event_type, event_id)
    if source != str(Source.WEBHOOK):
        return False
    # Only a session the reconciler ever filled in can have a late twin: ask the store before
    # spending an API call, so the common path costs one indexed lookup.
    if not await asyncio.to_thread(delivered.has_reconciled_delivery, engine, session_id):
        return False
    try:
        latest = await _latest_transition(client, session_id)
    except anthropic.NotFoundError:
        return False  # deleted since: the routing step's own fetch settles it
    if latest is None or latest[0] not in NOTIFIED_AS:
        return False
    status, at = latest
    if transition_event_id(session_id, status, at) == event_id:
        return False
    return await asyncio.to_thread(
        delivered.harvested, engine, session_id, status, at, before=event_id
    )
