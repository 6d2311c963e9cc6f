"""`answer`: on `requires_action`, answer what the session waits on, with no stream held.

Custom tool calls are run (exactly once, handlers/tools/runner.py) and answered with
`user.custom_tool_result`; tool uses held for confirmation are decided by the `[approvals]`
policy or recorded for a person (handlers/tools/confirm.py). What cannot be answered yet stays
pending: answering part of the blocking events re-idles the session with the rest, and that
notification runs this handler again, which finds the answered ones recorded and skips them.

Routed by default for idle notifications whose stop reason is `requires_action`.
"""

import asyncio
import uuid
from datetime import timedelta
from typing import Any

from sqlalchemy.engine import Engine

from handlers.tools.blocking import blocking_events
from handlers.tools.confirm import Confirmer
from handlers.tools.registry import ToolRegistry
from handlers.tools.runner import CustomToolAnswerer, ToolCallBusy
from idlehook import HandlerContext
from idlehook.settings import Settings
from store.engine import make_engine


class AnswerHandler:
    name = "answer"

    def __init__(
        self,
        engine: Engine | None = None,
        tools: ToolRegistry | None = None,
        transport: Any = None,
    ) -> None:
        # Built by wiring with the service's engine; loaded as a bare entry point it opens its
        # own from the settings on first use.
        self._engine = engine
        self._tools = tools
        self.transport = transport  # for the forward notice; tests may pass one

    def _ready(self, settings: Settings) -> tuple[Engine, ToolRegistry]:
        if self._engine is None:
            self._engine = make_engine(settings.database_url, pool_size=2)
        if self._tools is None:
            self._tools = ToolRegistry.load(settings.tools.modules, settings.tools.idempotent)
        return self._engine, self._tools

    async def handle(self, ctx: HandlerContext) -> None:
        engine, tools = await asyncio.to_thread(self._ready, ctx.settings)
        waiting = await blocking_events(ctx.client, ctx.session_id)
        if not waiting:
            ctx.log.info("answer.nothing_waiting")
            return
        settings = ctx.settings
        custom = CustomToolAnswerer(
            engine,
            ctx.client,
            tools,
            # One owner per attempt: a retried run of a dead worker is a different owner.
            owner=f"{ctx.event.delivery_id}:{ctx.attempt}:{uuid.uuid4().hex[:8]}",
            lease=timedelta(seconds=settings.worker.lease_seconds),
            timeout=settings.tools.timeout_seconds,
            now=ctx.now,
            answer_unknown=settings.tools.unknown == "error",
        )
        confirmer = Confirmer(
            engine,
            ctx.client,
            settings.approvals,
            settings.forward,
            now=ctx.now,
            transport=self.transport,
        )
        held = [call for call in waiting if not call.custom]
        agent_id: str | None = None
        metadata: dict[str, str] = {}
        if held:
            session = await ctx.session()
            agent_id = session.agent.id if session.agent is not None else None
            metadata = dict(session.metadata or {})
        outcomes: dict[str, str] = {}
        busy: list[str] = []
        failures: list[Exception] = []
        for call in waiting:
            try:
                if call.custom:
                    outcomes[call.id] = await custom.answer(ctx.session_id, call)
                else:
                    outcome = await confirmer.hold(ctx.session_id, call, agent_id, metadata)
                    outcomes[call.id] = f"{outcome.approval.state}:{outcome.action}"
            except ToolCallBusy:
                busy.append(call.id)
            except Exception as exc:  # answer the others first; then the run retries
                failures.append(exc)
        ctx.log.info("answer.done", outcomes=outcomes, busy=busy, failed=len(failures))
        if failures:
            raise failures[0]
        if busy:
            raise ToolCallBusy(f"{len(busy)} tool call(s) still running elsewhere")
