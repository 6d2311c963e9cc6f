"""The old stream-holding way: `GET /v1/sessions/{id}/events/stream`. Live events only (no
replay), an `event:` line on every frame (the SDK drops frames without one), `:` heartbeats,
and `session.deleted` then close when the session is deleted."""

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

from starlette.responses import StreamingResponse

from emulator.core import Emulator
from emulator.errors import BadRequest
from emulator.state import SessionRecord

DELTA_TYPES = ("agent.message", "agent.thinking")


def frame(event: dict[str, Any]) -> str:
    return f"event: {event['type']}\ndata: {json.dumps(event, separators=(',', ':'))}\n\n"


def open_stream(
    emu: Emulator, record: SessionRecord, deltas: list[str], request_id: str
) -> StreamingResponse:
    if len(deltas) > 100 or any(d not in DELTA_TYPES for d in deltas):
        raise BadRequest(f"event_deltas[]: only {', '.join(DELTA_TYPES)}")
    queue: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue()
    record.subscribers.append(queue)
    if "agent.message" in deltas:
        record.delta_subscribers.add(id(queue))

    async def frames() -> AsyncIterator[str]:
        try:
            yield ": connected\n\n"
            while True:
                try:
                    item = await asyncio.wait_for(
                        queue.get(), timeout=emu.config.sse_heartbeat_seconds
                    )
                except TimeoutError:
                    yield ": heartbeat\n\n"
                    continue
                if item is None:
                    return
                yield frame(item)
                if item["type"] == "session.deleted":
                    return
        finally:
            if queue in record.subscribers:
                record.subscribers.remove(queue)
            record.delta_subscribers.discard(id(queue))

    return StreamingResponse(
        frames(),
        media_type="text/event-stream",
        headers={"cache-control": "no-cache", "request-id": request_id},
    )
