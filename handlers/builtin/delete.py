"""`delete`: delete the session through the API so its billing stops at once.

Routes list it last: lane order means it runs only after the handlers before it finished, and
it refuses (dead-letters) unless they all succeeded, so a transcript is never lost to it. After
a replay of the failed one, replay this too. A 404 means someone deleted it already: done.
"""

import anthropic

from idlehook import HandlerContext, PermanentError


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
            await ctx.client.beta.sessions.delete(ctx.session_id)
            outcome = "deleted"
        except anthropic.NotFoundError:
            outcome = "already_gone"
        await ctx.mark_session(deleted=True)
        ctx.log.info("delete.done", outcome=outcome)
