"""`log`: one structured line with the session's result summary."""

from idlehook import HandlerContext

PREVIEW_CHARS = 200


class LogHandler:
    name = "log"

    async def handle(self, ctx: HandlerContext) -> None:
        result = await ctx.result()
        message = result.final_message or ""
        ctx.log.info(
            "session.result",
            session_id=result.session_id,
            status=result.status,
            stop_reason=result.stop_reason,
            cost_usd=result.cost_usd,
            active_seconds=result.active_seconds,
            duration_seconds=result.duration_seconds,
            events=result.event_count,
            files=len(result.files),
            outcomes=[o.get("result") for o in result.outcome_evaluations],
            message_chars=len(message),
            message_preview=message[:PREVIEW_CHARS],
        )
