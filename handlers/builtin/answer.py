"""`answer`: on `requires_action`, answer what the session waits on, with no stream held.

Custom tool calls are run (exactly once, handlers/tools/runner.py) and answered with
`user.custom_tool_result`; tool uses held for confirmation are decided by the `[approvals]`
policy or recorded for a person (handlers/tools/confirm.py). What cannot be answered yet stays
pending: answering part of the blocking events re-idles the session with the rest, and that
notification runs this handler again, which finds the answered ones recorded and skips them.

Routed by default for idle notifications whose stop reason is `requires_action`.

Its table (`AnswerConfig`) comes from `[tools]`, `[approvals]`, `[forward]` (where a person is
asked) and `[worker] lease_seconds` (handlers/plugin_config.py). It also needs idlehook's store
(tool calls and approvals are recorded there), so wiring builds it with the service's engine
(`wiring.answer_handler`); loaded as a bare entry point it has none and refuses to run.
"""

import asyncio
import uuid
from datetime import timedelta
from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy.engine import Engine

from handlers.api import HandlerContext, PermanentError
from handlers.config import ApprovalSettings, ForwardSettings, ToolsSettings
from handlers.tools.blocking import blocking_events
from handlers.tools.confirm import Confirmer
from handlers.tools.registry import ToolRegistry
from handlers.tools.runner import CustomToolAnswerer, ToolCallBusy


class AnswerConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    # How long a worker holds a custom tool call it runs before another may take it over.
    lease_seconds: float = Field(default=60.0, gt=0)
    tools: ToolsSettings = Field(default_factory=ToolsSettings)
    approvals: ApprovalSettings = Field(default_factory=ApprovalSettings)
    forward: ForwardSettings = Field(default_factory=ForwardSettings)


class AnswerHandler:
    name = "answer"
    Config = AnswerConfig

    def __init__(
        self,
        config: AnswerConfig | None = None,
        *,
        engine: Engine | None = None,
        tools: ToolRegistry | None = None,
        transport: Any = None,
    ) -> None:
        self.config = config or AnswerConfig()
        self._engine = engine
        self._tools = tools
        self.transport = transport  # for the forward notice; tests may pass one

    def _ready(self) -> tuple[Engine, ToolRegistry]:
        if self._engine is None:
            raise PermanentError("answer needs idlehook's store: build it with wiring")
        if self._tools is None:
            self._tools = ToolRegistry.load(self.config.tools.modules, self.config.tools.idempotent)
        return self._engine, self._tools

    async def handle(self, ctx: HandlerContext) -> None:
        engine, tools = await asyncio.to_thread(self._ready)
        waiting = await blocking_events(ctx.client, ctx.session_id)
        if not waiting:
            ctx.log.info("answer.nothing_waiting")
            return
        config = self.config
        custom = CustomToolAnswerer(
            engine,
            ctx.client,
            tools,
            # One owner per attempt: a retried run of a dead worker is a different owner.
            owner=f"{ctx.event.delivery_id}:{ctx.attempt}:{uuid.uuid4().hex[:8]}",
            lease=timedelta(seconds=config.lease_seconds),
            timeout=config.tools.timeout_seconds,
            now=ctx.now,
            answer_unknown=config.tools.unknown == "error",
        )
        confirmer = Confirmer(
            engine,
            ctx.client,
            config.approvals,
            config.forward,
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
