"""Run custom tool calls exactly once and answer them with `user.custom_tool_result`.

Each call is recorded by its `custom_tool_use_id` before the tool runs (store/tool_calls.py) and
its result after, so a duplicate or reconciled notification, a retried run or a second worker
finds the record and never runs the tool again: it sends the recorded result if that was not
accepted yet, or does nothing. The lease on the record is renewed while the tool runs.
"""

import asyncio
import contextlib
import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import structlog
from anthropic import AsyncAnthropic
from anthropic.lib.tools import ToolError
from sqlalchemy.engine import Engine

from handlers.redact import describe_error
from handlers.tools.blocking import Blocking, send_answer
from handlers.tools.registry import CustomTool, ToolRegistry
from store import tool_calls
from store.tool_calls import Next

log = structlog.get_logger(__name__)

MAX_ERROR_CHARS = 2000
_BLOCK_TYPES = frozenset({"text", "image", "document", "search_result"})


class ToolCallBusy(Exception):
    """Another live worker is running this call: retry the run later to see how it ended."""


@dataclass(frozen=True)
class ToolOutcome:
    content: list[dict[str, Any]]
    is_error: bool


def _text(text: str) -> list[dict[str, Any]]:
    return [{"type": "text", "text": text or "(no output)"}]


def to_content(value: Any) -> list[dict[str, Any]]:
    """A tool's return value as Sessions-API content blocks (the SDK session runner's rules)."""
    if value is None:
        return _text("")
    if isinstance(value, str):
        return _text(value)
    if isinstance(value, dict):
        value = [value] if value.get("type") in _BLOCK_TYPES else json.dumps(value, default=str)
        return to_content(value)
    if isinstance(value, Iterable):
        blocks: list[dict[str, Any]] = []
        for block in value:
            kind = block.get("type") if isinstance(block, dict) else None
            if kind == "text":
                blocks.append({"type": "text", "text": str(block.get("text") or "(no output)")})
            elif kind in _BLOCK_TYPES:
                blocks.append(dict(block))
            else:
                blocks.append({"type": "text", "text": json.dumps(block, default=str)})
        return blocks or _text("")
    return _text(json.dumps(value, default=str))


def describe_exception(exc: BaseException) -> str:
    """Type and message only, secrets masked: never a traceback, never frame locals."""
    return describe_error(exc, MAX_ERROR_CHARS)


async def run_tool(tool: CustomTool, arguments: dict[str, Any], timeout: float) -> ToolOutcome:
    try:
        async with asyncio.timeout(timeout):
            value = await tool.call(arguments)
    except TimeoutError:
        return ToolOutcome(_text(f"tool {tool.name!r} timed out after {timeout:g}s"), True)
    except ToolError as exc:
        return ToolOutcome(to_content(exc.content), True)
    except Exception as exc:  # the agent hears about it; the session goes on
        log.warning("tool.raised", tool=tool.name, error=describe_exception(exc))
        return ToolOutcome(_text(describe_exception(exc)), True)
    return ToolOutcome(to_content(value), False)


def result_event(
    custom_tool_use_id: str, content: list[dict[str, Any]], is_error: bool
) -> dict[str, Any]:
    return {
        "type": "user.custom_tool_result",
        "custom_tool_use_id": custom_tool_use_id,
        "content": content,
        "is_error": is_error,
    }


def _stored_content(result: str | None) -> list[dict[str, Any]]:
    if result is None:
        return _text("")
    try:
        value = json.loads(result)
    except ValueError:
        return _text(result)  # a plain message (the "interrupted" answer)
    return to_content(value)


class CustomToolAnswerer:
    """Answers one session's custom tool calls; owner identifies this attempt in the store."""

    def __init__(
        self,
        engine: Engine,
        client: AsyncAnthropic,
        tools: ToolRegistry,
        *,
        owner: str,
        lease: timedelta,
        timeout: float,
        now: Callable[[], datetime],
        answer_unknown: bool = True,
    ) -> None:
        self.engine = engine
        self.client = client
        self.tools = tools
        self.owner = owner
        self.lease = lease
        self.timeout = timeout
        self.now = now
        self.answer_unknown = answer_unknown

    async def answer(self, session_id: str, call: Blocking) -> str:
        """Run (at most once) and answer one call; returns what happened, for the log."""
        tool = self.tools.get(call.name)
        if tool is None and not self.answer_unknown:
            return "left"
        claim = await asyncio.to_thread(
            tool_calls.claim,
            self.engine,
            custom_tool_use_id=call.id,
            session_id=session_id,
            tool_name=call.name,
            input=call.input,
            owner=self.owner,
            now=self.now(),
            lease=self.lease,
            idempotent=tool.idempotent if tool is not None else False,
        )
        if claim.next is Next.DONE:
            return "already_sent"
        if claim.next is Next.BUSY:
            raise ToolCallBusy(f"tool call {call.id} is running elsewhere ({claim.call.owner})")
        if claim.interrupted:
            log.warning("tool.interrupted", tool=call.name, custom_tool_use_id=call.id)
        if claim.next is Next.RUN:
            outcome = await self._run(tool, call, claim.call.id)
            finished = await asyncio.to_thread(
                tool_calls.finish,
                self.engine,
                claim.call.id,
                self.owner,
                json.dumps(outcome.content),
                outcome.is_error,
                self.now(),
            )
            if not finished:
                # Our lease was taken over while the tool ran: the new owner answers.
                raise ToolCallBusy(f"tool call {call.id} was taken over while running")
        record = await asyncio.to_thread(tool_calls.get, self.engine, call.id)
        assert record is not None
        event = result_event(call.id, _stored_content(record.result), record.is_error)
        accepted = await send_answer(self.client, session_id, event, call.id)
        await asyncio.to_thread(tool_calls.mark_sent, self.engine, record.id, self.now())
        log.info(
            "tool.answered",
            tool=call.name,
            custom_tool_use_id=call.id,
            is_error=record.is_error,
            accepted=accepted,
            attempts=record.attempts,
        )
        return "sent" if accepted else "already_answered"

    async def _run(self, tool: CustomTool | None, call: Blocking, row_id: int) -> ToolOutcome:
        if tool is None:
            return ToolOutcome(_text(f"no tool named {call.name!r} is registered"), True)
        heartbeat = asyncio.create_task(self._heartbeat(row_id))
        try:
            return await run_tool(tool, call.input, self.timeout)
        finally:
            heartbeat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await heartbeat

    async def _heartbeat(self, row_id: int) -> None:
        every = max(self.lease.total_seconds() / 3, 0.05)
        while True:
            await asyncio.sleep(every)
            try:
                await asyncio.to_thread(
                    tool_calls.renew, self.engine, row_id, self.owner, self.now(), self.lease
                )
            except Exception as exc:  # a missed renewal only risks a takeover, which is fenced
                log.warning("tool.renew_failed", error=describe_exception(exc))
