"""`delete`: delete the session through the API (clean-up: an idle session accrues no runtime).

Routes list it last: lane order means it runs only after the handlers before it finished, and
it refuses (dead-letters) unless they all succeeded, so a transcript is never lost to it. After
a replay of the failed one, replay this too. A 404 means someone deleted it already: done.

Before deleting, it checks the session has not moved on: if it started another turn after the
notification this run is about (a new user.message while earlier handlers retried), deleting
would kill that turn and lose its transcript, so the run finishes without deleting; the new
turn's own notification routes the session again.

That check costs nothing when the delivery's own read of the session (routing's, shared with
its handlers) is younger than `[worker] reuse_reads_seconds` (default 10 s), every handler
before this one only reads the session (`reads_only`), and idlehook's records show no wake since
the read (a follow-up sent, a run start notified). Otherwise the session and its latest status
change are read again (two calls), as they always were. The trade-off: a session woken through
the API by someone other than idlehook within that window after the read, whose run-start
webhook has not arrived yet, is deleted and its new turn lost. Set it to 0 to always re-read.
"""

from collections.abc import Sequence
from datetime import datetime, timedelta

import anthropic
from anthropic.types.beta import BetaManagedAgentsSession
from pydantic import BaseModel, ConfigDict, Field

from handlers.api import BetaManagedAgentsSessionEvent, HandlerContext, PermanentError

_SETTLED = frozenset({"idle", "terminated"})
# The status events that mark a change of state (the transcript's own record of transitions).
_STATUS_EVENTS = frozenset(
    {
        "session.status_running",
        "session.status_idle",
        "session.status_rescheduled",
        "session.status_terminated",
    }
)
# The webhook's envelope time and the event's processed_at come from different code paths.
_CLOCK_SKEW = timedelta(seconds=1)


def moved_on(
    status: str,
    last_change: datetime | None,
    received_at: datetime,
    event_created_at: datetime | None,
) -> str | None:
    """Why the session is no longer in the state the notification reported, if it is not."""
    if status not in _SETTLED:
        return f"status_{status}"
    # A transition after the one notified about happened after we received the notification
    # (our clock) and after the webhook was created (Anthropic's clock): only a change later
    # than both is a new one, whichever clock runs ahead.
    seen_until = received_at
    if event_created_at is not None:
        seen_until = max(seen_until, event_created_at + _CLOCK_SKEW)
    if last_change is not None and last_change > seen_until:
        return "changed_since_notified"
    return None


class DeleteConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    # `[worker] reuse_reads_seconds`: how long the delivery's own read stands (module docstring).
    reuse_reads_seconds: float = Field(default=10.0, ge=0)


def last_status_change(events: Sequence[BetaManagedAgentsSessionEvent]) -> datetime | None:
    """When the transcript's latest status event was processed (None: it has none)."""
    for event in reversed(events):
        if getattr(event, "type", None) in _STATUS_EVENTS:
            at: datetime | None = getattr(event, "processed_at", None)
            return at
    return None


class DeleteHandler:
    name = "delete"
    Config = DeleteConfig

    def __init__(self, config: DeleteConfig | None = None) -> None:
        self.config = config or DeleteConfig()

    async def handle(self, ctx: HandlerContext) -> None:
        if ctx.event.session_id is None:
            ctx.log.info("delete.skipped", reason="not about a session")
            return
        failed = [run.handler for run in ctx.prior_runs if run.state != "succeeded"]
        if failed:
            raise PermanentError(f"not deleting: earlier handlers did not succeed: {failed}")
        try:
            session, last_change = await self._current(ctx)
            reason = moved_on(
                session.status,
                last_change,
                ctx.event.received_at,
                ctx.event.event_created_at,
            )
            if reason is not None:
                ctx.log.info("delete.skipped_running", reason=reason, status=session.status)
                return
            await ctx.client.beta.sessions.delete(ctx.session_id)
            outcome = "deleted"
        except anthropic.NotFoundError:
            outcome = "already_gone"
        await ctx.record_deleted()
        ctx.log.info("delete.done", outcome=outcome)

    async def _current(
        self, ctx: HandlerContext
    ) -> tuple[BetaManagedAgentsSession, datetime | None]:
        """The session's status and its latest status change: the delivery's own read when it
        still holds (see the module docstring), else read again now."""
        shared = ctx.shared_read()
        if (
            shared is not None
            and shared.events is not None
            and await self._still_holds(ctx, self.config.reuse_reads_seconds)
        ):
            return shared.session, last_status_change(shared.events)
        session = await ctx.client.beta.sessions.retrieve(ctx.session_id)
        return session, await self._last_change(ctx)

    @staticmethod
    async def _still_holds(ctx: HandlerContext, reuse_seconds: float) -> bool:
        shared = ctx.shared_read()
        assert shared is not None
        window = timedelta(seconds=reuse_seconds)
        if ctx.now() - shared.at >= window:  # 0: always read again
            return False
        # A handler that may act on the session (answer it, send it a message) may have woken it
        # since the read; only ones that declare they just read leave the read standing.
        if not all(run.reads_only for run in ctx.prior_runs):
            return False
        return not await ctx.woken_since(shared.at)

    @staticmethod
    async def _last_change(ctx: HandlerContext) -> datetime | None:
        page = await ctx.client.beta.sessions.events.list(
            ctx.session_id,
            types=[
                "session.status_running",
                "session.status_idle",
                "session.status_rescheduled",
                "session.status_terminated",
            ],
            order="desc",
            limit=1,
        )
        for event in page.data:
            at: datetime | None = event.processed_at
            return at
        return None
