"""The plugin API: the Handler Protocol and everything a handler sees.

Imports nothing of `idlehook` at runtime: `idlehook/__init__.py` re-exports this module.

A handler succeeds by returning. Raising retries the run with backoff; raising `PermanentError`
dead-letters it at once. Third-party plugins import these names from `idlehook`; the built-ins
(handlers/builtin/) import them from here, since `handlers` never imports `idlehook`.

What a handler is handed holds no secret of idlehook's: its own `[plugins.<name>]` table reaches
its constructor (handlers/registry.py), and `ctx.config` is `SharedConfig`, the few facts every
plugin may read. The one exception is `ctx.client`, which must hold the API key to make calls
(tests/handlers/test_no_secrets.py walks a context to prove it).
"""

import asyncio
import warnings
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import anthropic
from anthropic import AsyncAnthropic
from anthropic.types.beta import BetaFileMetadata, BetaManagedAgentsSession
from anthropic.types.beta.sessions import BetaManagedAgentsSessionEvent
from structlog.typing import FilteringBoundLogger

from handlers.billing import Pricing
from handlers.errors import PermanentError
from handlers.reads import DeliveryReads, SessionRead, read_transcript
from handlers.result import Interruption, SessionResult, as_dict, build_result

__all__ = [
    "BetaFileMetadata",
    "BetaManagedAgentsSessionEvent",
    "Handler",
    "HandlerContext",
    "Notification",
    "PermanentError",
    "PluginConfigError",
    "Pricing",
    "PriorRun",
    "SessionMarker",
    "SessionResult",
    "SharedConfig",
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
    # The handler says it only reads the session (`reads_only = True` on its class): it never
    # wakes it, so what was read before it ran still holds after it (handlers/builtin/delete.py).
    reads_only: bool = False


class PluginConfigError(ValueError):
    """A plugin's `[plugins.<name>]` table does not fit it (raised at startup); the message names
    the plugin and each field, never a value."""


@dataclass(frozen=True)
class SharedConfig:
    """`ctx.config`: what idlehook's configuration tells every plugin, and nothing secret.

    A plugin's own settings are its `[plugins.<name>]` table, given to its constructor; this is
    only what is the same for all of them."""

    # Where the archive plugin writes `<session_id>/` folders (`results_dir`).
    results_dir: Path = Path("idlehook-data/results")
    # How sessions are priced (`billing_model`, `runtime_usd_per_hour`): `ctx.result()` uses it.
    pricing: Pricing = field(default_factory=Pricing)
    # This instance's name, stamped as metadata `idlehook_owner` on the sessions it launches.
    owner: str = "idlehook"
    # `[archive] url` (no password in it): where the archive writes instead of `results_dir`.
    archive_url: str | None = None


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
    """A plugin: a name (the entry-point name and the one routes use) and an async `handle`.

    Loaded from an entry point, a class with a `Config` class attribute (a pydantic model) is
    built as `Plugin(config)`, its `[plugins.<name>]` table validated against `Config` at
    startup; one without `Config` is built as `Plugin()` and may have no table.

    Optional: `async def aclose(self) -> None`, for a plugin that holds something open (a
    broker connection, a client session). The worker awaits it once each time it stops (serve's
    worker process, `idlehook worker`, `--drain` done), after its in-flight runs finished, with
    `handlers.worker.PLUGIN_CLOSE_SECONDS` for it; whatever it raises is logged, not raised. It
    is not part of this Protocol (a plugin without it is still a handler). A worker may run
    again after it (a test's repeated drains): open lazily, at the next `handle`, not in
    `__init__` (the `publish_*` plugins do, handlers/builtin/publisher.py)."""

    name: str

    async def handle(self, ctx: "HandlerContext") -> None: ...


async def _no_mark(session_id: str, **_: Any) -> None:
    return None


async def _no_interruption(session_id: str) -> Interruption | None:
    return None


async def _never_woken(event: "Notification", since: datetime, seen: frozenset[str]) -> bool:
    return False


# Reads idlehook's own record of having interrupted a session (the store, behind a thread).
InterruptionReader = Callable[[str], Awaitable[Interruption | None]]
# Whether idlehook's own records say the notification's session was (or may have been) woken
# after it was read at a time, whose transcript then held the `seen` event ids: a follow-up sent,
# a run start notified (handlers/wakes.py). No API call.
WakeReader = Callable[["Notification", datetime, frozenset[str]], Awaitable[bool]]


class HandlerContext:
    """What a handler gets: the notification, the API client, a logger, the clock, the shared
    config (`SharedConfig`, nothing secret), and lazy, cached views of the session. `session()`,
    `events()`, `files()` and `result()` are read at most once per delivery in a worker and
    shared by its routing step and handlers (the routing step usually has read the session and
    its transcript already): they show the session as it was at `shared_read().at`, not
    necessarily now. A handler that must decide on the state
    right now (delete: running again?) reads it itself when that read is too old."""

    def __init__(
        self,
        *,
        event: Notification,
        client: AsyncAnthropic,
        log: FilteringBoundLogger,
        now: Callable[[], datetime],
        config: SharedConfig | None = None,
        handler: str,
        attempt: int = 1,
        prior_runs: Sequence[PriorRun] = (),
        mark: SessionMarker | Callable[..., Awaitable[None]] = _no_mark,
        reads: DeliveryReads | None = None,
        interruption: InterruptionReader = _no_interruption,
        woken: WakeReader = _never_woken,
    ) -> None:
        self.event = event
        self.client = client
        self.log = log
        self.now = now
        self.config = config if config is not None else SharedConfig()
        self.handler = handler
        self.attempt = attempt
        self.prior_runs = tuple(prior_runs)
        self._mark = mark
        self._reads = reads if reads is not None else DeliveryReads()
        self._interruption = interruption
        self._woken = woken
        self._lock = asyncio.Lock()

    @property
    def session_id(self) -> str:
        if self.event.session_id is None:
            raise PermanentError(f"{self.event.event_type} is not about a session")
        return self.event.session_id

    async def session(self) -> BetaManagedAgentsSession:
        """The session as this delivery read it (fetched now if nothing read it yet)."""
        reads = self._reads
        if reads.session is None:
            reads.started(self.now())
            reads.session = await self.client.beta.sessions.retrieve(self.session_id)
        return reads.session

    async def events(self) -> list[BetaManagedAgentsSessionEvent]:
        """Every event of the session, in order, following every page (the SDK's union: narrow
        on `event.type`)."""
        reads = self._reads
        if reads.events is None:
            reads.started(self.now())
            reads.events = await read_transcript(self.client, self.session_id)
        return reads.events

    async def files(self) -> list[BetaFileMetadata]:
        """Files the session produced; none when the files API has nothing (or 404s)."""
        reads = self._reads
        if reads.files is None:
            try:
                pages = self.client.beta.files.list(scope_id=self.session_id)
                reads.files = [f async for f in pages]
            except anthropic.NotFoundError:
                reads.files = []
        return reads.files

    async def result(self, *, files: bool = False) -> SessionResult:
        """The session's result. Its `files` are listed (one more call) only when asked for;
        otherwise they are None, "not listed", unless this delivery listed them already."""
        async with self._lock:
            reads = self._reads
            if reads.result is None:
                session = await self.session()
                reads.result = build_result(
                    session,
                    await self.events(),
                    reads.files,
                    pricing=self.config.pricing,
                    interruption=await self._interruption(session.id),
                )
            if files and reads.result.files is None:
                listed = [as_dict(f) for f in await self.files()]
                reads.result = reads.result.model_copy(update={"files": listed})
            return reads.result

    def reread(self) -> None:
        """Read the session afresh from here on, for this run only: the next `session()`,
        `events()`, `files()` and `result()` call the API again. The delivery's other runs keep
        the shared read. For a retry that must not reuse the read it failed on (archive)."""
        self._reads = DeliveryReads()

    def shared_read(self) -> SessionRead | None:
        """What this delivery has read of the session so far, and when; None: nothing yet."""
        return self._reads.snapshot()

    async def woken_since(self, at: datetime) -> bool:
        """Whether idlehook's own records (no API call) say the session was, or may have been,
        woken since this delivery read it at `at`: a follow-up it sent that the transcript read
        does not hold yet, a run start notified after this notification."""
        events = self._reads.events or []
        seen = frozenset(str(e.id) for e in events if getattr(e, "id", None) is not None)
        return await self._woken(self.event, at, seen)

    async def record_saved(self, result: SessionResult | None = None) -> None:
        """Tell idlehook this session's result and transcript, as they are now, are saved
        durably by this handler (written, sent, stored), and so safe to lose with the session.

        It records the time on the tracked session (`result_captured_at`, `transcript_saved_at`)
        and, given `result` (`await ctx.result()`), its facts (status, stop reason, cost). The
        reaper deletes an idle session it launched only once a save is recorded at or after the
        session's latest transition; until then it counts the session as an unsaved outcome and
        archives it itself first (`[reaper] archive_before_delete`) or leaves it. Call it after
        the save, never before: a crash in between must leave the session unsaved."""
        await self._mark(
            self.session_id, result_captured=True, transcript_saved=True, result=result
        )

    async def record_deleted(self) -> None:
        """Tell idlehook the session is gone (deleted through `ctx.client`, or found gone):
        later notifications about it run no handler."""
        await self._mark(self.session_id, deleted=True)

    async def mark_session(
        self,
        *,
        result_captured: bool = False,
        transcript_saved: bool = False,
        deleted: bool = False,
        result: SessionResult | None = None,
    ) -> None:
        """Deprecated: use `record_saved` or `record_deleted`; removed in the next release."""
        warnings.warn(
            "HandlerContext.mark_session is deprecated: use record_saved() or record_deleted()",
            DeprecationWarning,
            stacklevel=2,
        )
        await self._mark(
            self.session_id,
            result_captured=result_captured,
            transcript_saved=transcript_saved,
            deleted=deleted,
            result=result,
        )

    def prior_succeeded(self) -> bool:
        return all(run.state == "succeeded" for run in self.prior_runs)
