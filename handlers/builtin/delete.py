"""`delete`: delete the session through the API (clean-up: an idle session accrues no runtime).

Routes list it last: lane order means it runs only after the handlers before it finished, and
it refuses (dead-letters) unless they all succeeded, so a transcript is never lost to it. After
a replay of the failed one, replay this too. A 404 means someone deleted it already: done.

The session is fetched again first: if it started another turn after the notification this run
is about (a new user.message while earlier handlers retried), deleting would kill that turn and
lose its transcript, so the run finishes without deleting; the new turn's own notification
routes the session again.
"""

from datetime import datetime, timedelta

import anthropic

from idlehook import HandlerContext, PermanentError

_SETTLED = frozenset({"idle", "terminated"})
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


class DeleteHandler:
    name = "delete"

    async def handle(self, ctx: HandlerContext) -> None:
        if ctx.event.session_id is None:
            ctx.log.info("delete.skipped", reason="not about a session")
            return
        failed = [run.handler for run in ctx.prior_runs if run.state != "succeeded"]
        if failed:
            raise PermanentError(f"not deleting: earlier handlers did not succeed: {failed}")
        try:
            session = await ctx.session()
            reason = moved_on(
                session.status,
                await self._last_change(ctx),
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
        await ctx.mark_session(deleted=True)
        ctx.log.info("delete.done", outcome=outcome)

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
