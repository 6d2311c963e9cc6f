"""The API calls the reaper and the reconciler make, counted, and tried again after a 429.

Every call here is of the API's "other" class (600 RPM). The client's transport paces each one
in the shared budget (sessions/paced_transport.py) and, after a 429 that gets through anyway,
pushes the whole class back by the server's advice; the call is then tried again once that
advice has passed. Any other error is the caller's to judge.
"""

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

import anthropic
import structlog
from anthropic import AsyncAnthropic

from sessions.retry_after import retry_after_seconds
from sessions.session_view import as_utc

log = structlog.get_logger(__name__)

T = TypeVar("T")

STATUS_EVENT_TYPES = ("session.status_idle", "session.status_running", "session.status_terminated")
# The stream's status events, and the status each one leaves the session in.
STATUS_OF_EVENT = {
    "session.status_idle": "idle",
    "session.status_running": "running",
    "session.status_terminated": "terminated",
    "session.status_rescheduled": "rescheduling",
}
DEFAULT_RETRY_AFTER_S = 1.0
# "The latest event was not read", as opposed to None: "read, and the session has none".
UNREAD: Any = object()


@dataclass(frozen=True)
class StatusEvent:
    """The latest status change in a session's event list: what it became, and when."""

    status: str
    at: datetime
    stop_reason: str | None = None


@dataclass(frozen=True)
class Snapshot:
    """What a session looked like when chosen; any difference later means hands off."""

    status: str
    updated_at: datetime
    last_event_id: str | None


def wait_seconds(exc: anthropic.APIStatusError) -> float:
    asked = retry_after_seconds(exc.response.headers)
    return DEFAULT_RETRY_AFTER_S if asked is None else asked


class PacedCalls:
    """Calls through a client idlehook built (wiring.api_client), whose transport paces them."""

    def __init__(self, client: AsyncAnthropic, *, max_rate_retries: int = 5) -> None:
        self.client = client
        self.max_rate_retries = max_rate_retries
        self.rate_limited = 0  # 429s seen, for reports and tests
        self.made = 0  # calls sent (each 429'd attempt too): what a sweep spent of its budget

    async def call(self, fn: Callable[[], Awaitable[T]]) -> T:
        attempt = 0
        while True:
            self.made += 1
            try:
                return await fn()
            except anthropic.RateLimitError as exc:
                self.rate_limited += 1
                attempt += 1
                if attempt > self.max_rate_retries:
                    raise
                wait = wait_seconds(exc)
                log.warning("api.rate_limited", retry_after_s=wait, attempt=attempt)
                # A paced client's transport has already held the class back this long for
                # every process, so this wait overlaps that one; it is what holds back the
                # admin key's client (the endpoint read), which is not paced.
                await asyncio.sleep(wait)

    async def list_sessions(
        self,
        *,
        created_at_gte: datetime,
        statuses: Sequence[str] | None = None,
        include_archived: bool = True,
    ) -> list[Any]:
        """Every session created since `created_at_gte`, oldest first, one paced call a page."""
        params: dict[str, Any] = {
            "created_at_gte": created_at_gte,
            "include_archived": include_archived,
            "order": "asc",
            "limit": 100,
        }
        if statuses:
            params["statuses"] = list(statuses)
        page = await self.call(lambda: self.client.beta.sessions.list(**params))
        found: list[Any] = list(page.data)
        while page.has_next_page():
            current = page
            page = await self.call(current.get_next_page)
            found.extend(page.data)
        return found

    async def retrieve(self, session_id: str) -> Any:
        return await self.call(lambda: self.client.beta.sessions.retrieve(session_id))

    async def delete(self, session_id: str) -> None:
        await self.call(lambda: self.client.beta.sessions.delete(session_id))

    async def interrupt(self, session_id: str) -> None:
        await self.call(
            lambda: self.client.beta.sessions.events.send(
                session_id, events=[{"type": "user.interrupt"}]
            )
        )

    async def latest_event(self, session_id: str, types: Sequence[str] = ()) -> Any | None:
        params: dict[str, Any] = {"order": "desc", "limit": 1}
        if types:
            params["types"] = list(types)
        page = await self.call(lambda: self.client.beta.sessions.events.list(session_id, **params))
        return page.data[0] if page.data else None

    async def latest_status(self, session_id: str) -> StatusEvent | None:
        event = await self.latest_event(session_id, STATUS_EVENT_TYPES)
        return status_event_of(event) if event is not None else None

    async def latest_status_from(self, session_id: str, latest: Any | None) -> StatusEvent | None:
        """The latest status change, given the latest event: no call when that event is one."""
        if latest is None:
            return None  # no events at all, so no status event either
        status = status_event_of(latest)
        return status if status is not None else await self.latest_status(session_id)

    async def snapshot(self, session: Any, latest: Any = UNREAD) -> Snapshot:
        """`latest`, the session's latest event (None: it has none) if already read."""
        event = await self.latest_event(session.id) if latest is UNREAD else latest
        return snapshot_of(session, event)

    async def run_started_at(self, session_id: str) -> datetime | None:
        """When the session's current run began: its first `status_running` since it last
        rested. Two reads, spent only on sessions old enough to be over a run-length limit; a
        reschedule within the run re-emits `status_running` and must not restart the clock."""
        rested = await self.latest_event(
            session_id, ("session.status_idle", "session.status_terminated")
        )
        params: dict[str, Any] = {
            "order": "asc",
            "limit": 1,
            "types": ["session.status_running"],
        }
        rested_at = getattr(rested, "processed_at", None)
        if rested_at is not None:
            params["created_at_gt"] = rested_at
        page = await self.call(lambda: self.client.beta.sessions.events.list(session_id, **params))
        started = getattr(page.data[0], "processed_at", None) if page.data else None
        return as_utc(started) if started is not None else None

    async def last_event_id(self, session_id: str) -> str | None:
        event = await self.latest_event(session_id)
        return getattr(event, "id", None)


def snapshot_of(session: Any, latest: Any | None) -> Snapshot:
    return Snapshot(
        status=str(session.status),
        updated_at=as_utc(session.updated_at),
        last_event_id=getattr(latest, "id", None),
    )


def status_event_of(event: Any) -> StatusEvent | None:
    status = STATUS_OF_EVENT.get(str(event.type))
    processed_at = getattr(event, "processed_at", None)
    if status is None or processed_at is None:
        return None
    stop = getattr(event, "stop_reason", None)
    return StatusEvent(
        status=status,
        at=as_utc(processed_at),
        stop_reason=str(stop.type) if stop is not None else None,
    )
