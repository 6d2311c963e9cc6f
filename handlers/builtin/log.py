"""`log`: one structured line with the session's result summary, and one more, a warning, when
the session stopped on its spend ceiling (what it spent, the cap, how to raise it)."""

from handlers.api import HandlerContext
from handlers.spend import cap_cents, cap_from_metadata, format_usd, spent_cents

PREVIEW_CHARS = 200
BUDGET_REACHED = "budget_reached"


class LogHandler:
    name = "log"
    reads_only = True  # never wakes the session (handlers/builtin/delete.py relies on it)

    async def handle(self, ctx: HandlerContext) -> None:
        result = await ctx.result()
        message = result.final_message or ""
        ctx.log.info(
            "session.result",
            session_id=result.session_id,
            status=result.status,
            stop_reason=result.stop_reason,
            cost_usd=result.cost_usd,
            budget_usd=cap_from_metadata(result.metadata),
            active_seconds=result.active_seconds,
            duration_seconds=result.duration_seconds,
            events=result.event_count,
            files=None if result.files is None else len(result.files),  # None: not listed
            outcomes=[o.get("result") for o in result.outcome_evaluations],
            message_chars=len(message),
            message_preview=message[:PREVIEW_CHARS],
        )
        if result.stop_reason == BUDGET_REACHED:
            await self._budget_reached(ctx, result.session_id)

    async def _budget_reached(self, ctx: HandlerContext, session_id: str) -> None:
        # The live session, not the result: the cap the API enforced and the list cost it
        # counted, whatever idlehook stamped on the metadata.
        session = await ctx.session()
        cap = cap_cents(session.budget)
        spent = spent_cents(session.usage)
        ctx.log.warning(
            "session.budget_reached",
            session_id=session_id,
            stop_reason=BUDGET_REACHED,
            spent_usd=spent / 100,
            budget_usd=None if cap is None else cap / 100,
            message=(
                f"session {session_id} stopped on its budget: spent {format_usd(spent)} of "
                f"{format_usd(cap) or 'no cap'}; `idlehook budget {session_id} USD` raises it "
                "and the session resumes"
            ),
        )
