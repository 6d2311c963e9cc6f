"""What a session is waiting on, read from its event list, and answering it once.

The latest `session.status_idle` says `requires_action` and names the blocking `event_ids`;
the tool-use events with those ids say what each one is. An answer the API refuses because the
event is no longer awaited was already given (a lost acknowledgement): that counts as sent.
"""

from dataclasses import dataclass
from typing import Any

import anthropic
from anthropic import AsyncAnthropic

CUSTOM = "agent.custom_tool_use"
HELD = ("agent.tool_use", "agent.mcp_tool_use")
TOOL_USE_TYPES = [CUSTOM, *HELD]


@dataclass(frozen=True)
class Blocking:
    """One event the session waits on."""

    id: str
    type: str  # agent.custom_tool_use | agent.tool_use | agent.mcp_tool_use
    name: str
    input: dict[str, Any]

    @property
    def custom(self) -> bool:
        return self.type == CUSTOM


async def blocking_ids(client: AsyncAnthropic, session_id: str) -> list[str]:
    """The event ids the session waits on now; empty unless idle with `requires_action`."""
    page = await client.beta.sessions.events.list(
        session_id, types=["session.status_idle"], order="desc", limit=1
    )
    for event in page.data:
        reason = getattr(event, "stop_reason", None)
        if reason is None or reason.type != "requires_action":
            return []
        return list(getattr(reason, "event_ids", None) or [])
    return []


async def blocking_events(client: AsyncAnthropic, session_id: str) -> list[Blocking]:
    ids = await blocking_ids(client, session_id)
    if not ids:
        return []
    wanted = set(ids)
    found: dict[str, Blocking] = {}
    async for event in client.beta.sessions.events.list(
        session_id,
        types=TOOL_USE_TYPES,  # type: ignore[arg-type]  # literals, typed as str for reuse
    ):
        if event.id in wanted:
            raw = getattr(event, "input", None)
            found[event.id] = Blocking(
                id=event.id,
                type=event.type,
                name=str(getattr(event, "name", "")),
                input=dict(raw) if isinstance(raw, dict) else {},
            )
    # The idle's order is the order the agent made the calls in.
    return [found[i] for i in ids if i in found]


class AnswerRefused(Exception):
    """The API refused an answer to an event it still waits on: our answer is malformed."""


async def send_answer(
    client: AsyncAnthropic, session_id: str, event: dict[str, Any], blocking_id: str
) -> bool:
    """Send one answer. True: accepted; False: the event was no longer awaited (answered before).

    Other API errors propagate (the caller's run is retried).
    """
    try:
        await client.beta.sessions.events.send(session_id, events=[event])  # type: ignore[list-item]
    except (anthropic.NotFoundError, anthropic.ConflictError):
        return False  # deleted, archived or terminated: nothing waits any more
    except anthropic.BadRequestError as exc:
        if blocking_id in await blocking_ids(client, session_id):
            raise AnswerRefused(f"{event['type']} for {blocking_id}: {exc.message}") from exc
        return False
    return True
