"""The plugin API: the Handler Protocol and everything a handler sees.

Imports nothing of `idlehook` at runtime: `idlehook/__init__.py` re-exports this module.

A handler succeeds by returning. Raising retries the run with backoff; raising `PermanentError`
dead-letters it at once. Plugins import these names from `idlehook`, never from here.
"""

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import anthropic
from anthropic import AsyncAnthropic
from anthropic.types.beta import BetaManagedAgentsSession
from structlog.typing import FilteringBoundLogger

from handlers.errors import PermanentError
from handlers.result import Interruption, SessionResult, build_result

if TYPE_CHECKING:
    from idlehook.settings import Settings

__all__ = [
    "Handler",
    "HandlerContext",
    "Notification",
    "PermanentError",
    "PriorRun",
    "SessionMarker",
    "SessionResult",
]


@dataclass(frozen=True)
class Notification:
    """One webhook notification as stored (thin: fetch the session for anything more)."""

    delivery_id: int
    event_id: str
    event_type: str
    resource_id: str
    session_id: str | None
    source: str  # "webhook" or "reconcile"
    received_at: datetime
    event_created_at: datetime | None = None


@dataclass(frozen=True)
class PriorRun:
    """A run before this one for the same notification (lane order guarantees it finished)."""

    handler: str
    state: str


class SessionMarker(Protocol):
    """Records on the tracked session what a handler did (the store, behind a thread)."""

    async def __call__(
        self,
        session_id: str,
        *,
        result_captured: bool = False,
        transcript_saved: bool = False,
        deleted: bool = False,
        result: SessionResult | None = None,
    ) -> None: ...


@runtime_checkable
class Handler(Protocol):
    """A plugin: a name (the entry-point name and the one routes use) and an async `handle`."""

    name: str

    async def handle(self, ctx: "HandlerContext") -> None: ...


async def _no_mark(session_id: str, **_: Any) -> None:
    return None


async def _no_interruption(session_id: str) -> Interruption | None:
    return None


# Reads idlehook's own record of having interrupted a session (the store, behind a thread).
InterruptionReader = Callable[[str], Awaitable[Interruption | None]]


class DeliveryReads:
    """What one delivery's handlers read of its session, fetched once and shared by them.

    A delivery's handlers run one after another in its lane, all about one transition: archive
    and forward want the same transcript, and the second need not ask the API (or parse every
    event) again. The live session is never shared: `ctx.session()` is fetched by each run, so
    a handler deciding on the session's state now (delete: running again?) sees it now.
    """

    def __init__(self) -> None:
        self.events: list[Any] | None = None
        self.files: list[Any] | None = None
        self.result: SessionResult | None = None


class HandlerContext:
    """What a handler gets: the notification, the API client, a logger, the clock, settings, and
    lazy, cached views of the session: `session()` fetched at most once per run; `events()`,
    `files()` and `result()` at most once per delivery in a worker, shared by its handlers."""

    def __init__(
        self,
        *,
        event: Notification,
        client: AsyncAnthropic,
        log: FilteringBoundLogger,
        now: Callable[[], datetime],
        settings: "Settings",
        handler: str,
        attempt: int = 1,
        prior_runs: Sequence[PriorRun] = (),
        mark: SessionMarker | Callable[..., Awaitable[None]] = _no_mark,
        reads: DeliveryReads | None = None,
        interruption: InterruptionReader = _no_interruption,
    ) -> None:
        self.event = event
        self.client = client
        self.log = log
        self.now = now
        self.settings = settings
        self.handler = handler
        self.attempt = attempt
        self.prior_runs = tuple(prior_runs)
        self._mark = mark
        self._session: BetaManagedAgentsSession | None = None
        self._reads = reads if reads is not None else DeliveryReads()
        self._interruption = interruption
        self._lock = asyncio.Lock()

    @property
    def session_id(self) -> str:
        if self.event.session_id is None:
            raise PermanentError(f"{self.event.event_type} is not about a session")
        return self.event.session_id

    async def session(self) -> BetaManagedAgentsSession:
        if self._session is None:
            self._session = await self.client.beta.sessions.retrieve(self.session_id)
        return self._session

    async def events(self) -> list[Any]:
        """Every event of the session, in order, following every page."""
        reads = self._reads
        if reads.events is None:
            pages = self.client.beta.sessions.events.list(self.session_id)
            reads.events = [event async for event in pages]
        return reads.events

    async def files(self) -> list[Any]:
        """Files the session produced; none when the files API has nothing (or 404s)."""
        reads = self._reads
        if reads.files is None:
            try:
                pages = self.client.beta.files.list(scope_id=self.session_id)
                reads.files = [f async for f in pages]
            except anthropic.NotFoundError:
                reads.files = []
        return reads.files

    async def result(self) -> SessionResult:
        async with self._lock:
            reads = self._reads
            if reads.result is None:
                session = await self.session()
                reads.result = build_result(
                    session,
                    await self.events(),
                    await self.files(),
                    pricing=self.settings.pricing(),
                    interruption=await self._interruption(session.id),
                )
            return reads.result

    async def mark_session(
        self,
        *,
        result_captured: bool = False,
        transcript_saved: bool = False,
        deleted: bool = False,
        result: SessionResult | None = None,
    ) -> None:
        """Record on the tracked session what this handler did (and the result's facts)."""
        await self._mark(
            self.session_id,
            result_captured=result_captured,
            transcript_saved=transcript_saved,
            deleted=deleted,
            result=result,
        )

    def prior_succeeded(self) -> bool:
        return all(run.state == "succeeded" for run in self.prior_runs)
