"""What one delivery read of its session: read once (by the routing step, or the first handler
that asks) and shared by the delivery's routing and handlers, with the time it was read.

A delivery's runs are one after another in its lane, all about one transition: routing needs the
session (stale idle? which rules?) and the latest stop reason, archive the whole transcript,
forward and log the result built from both. Read once, that is two calls, not one per run.
"""

from dataclasses import dataclass
from datetime import datetime

from anthropic import AsyncAnthropic
from anthropic.types.beta import BetaFileMetadata, BetaManagedAgentsSession
from anthropic.types.beta.sessions import BetaManagedAgentsSessionEvent

from handlers.result import SessionResult

# The API's largest events page: an ordinary session's whole transcript in one call.
TRANSCRIPT_PAGE = 1000


async def read_transcript(
    client: AsyncAnthropic, session_id: str
) -> list[BetaManagedAgentsSessionEvent]:
    """Every event of the session, in order, following every page."""
    pages = client.beta.sessions.events.list(session_id, limit=TRANSCRIPT_PAGE)
    return [event async for event in pages]


@dataclass(frozen=True)
class SessionRead:
    """The shared view of the session: as it was at `at` (our clock, taken before the calls), and
    its transcript then (None: not read yet)."""

    session: BetaManagedAgentsSession
    events: list[BetaManagedAgentsSessionEvent] | None
    at: datetime


class DeliveryReads:
    """One delivery's reads, kept by the worker (handlers.worker) for its routing and handlers.

    `read_at` is when the first of `session`/`events` was fetched, taken before the call: the
    state they show is at least that recent. A handler deciding on the session's state now
    (delete) weighs that age itself (`HandlerContext.shared_read`)."""

    def __init__(self) -> None:
        self.session: BetaManagedAgentsSession | None = None
        self.events: list[BetaManagedAgentsSessionEvent] | None = None
        self.read_at: datetime | None = None
        self.files: list[BetaFileMetadata] | None = None
        self.result: SessionResult | None = None

    def started(self, at: datetime) -> None:
        """A read is about to be made at `at`: the shared state is at least this old."""
        if self.read_at is None:
            self.read_at = at

    def snapshot(self) -> SessionRead | None:
        if self.session is None or self.read_at is None:
            return None
        return SessionRead(self.session, self.events, self.read_at)
