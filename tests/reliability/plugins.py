"""A test-only handler plugin, loaded by idlehook subprocesses through a generated dist-info.

`journal` appends a `start` line, waits `RELIABILITY_HOLD_SECONDS`, then appends a `done` line
to `RELIABILITY_JOURNAL`: one O_APPEND write per line, so lines from many processes never
interleave. The journal is the outside world a handler changes; the tests read it back.
"""

import asyncio
import json
import os
import time
from typing import Any

from idlehook import HandlerContext
from idlehook.settings import env_value


def append_line(path: str, record: dict[str, Any]) -> None:
    data = (json.dumps(record, separators=(",", ":")) + "\n").encode()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)


class JournalHandler:
    name = "journal"

    async def handle(self, ctx: HandlerContext) -> None:
        path = env_value("RELIABILITY_JOURNAL") or "journal.jsonl"
        hold = float(env_value("RELIABILITY_HOLD_SECONDS") or "0")
        record = {
            "event_id": ctx.event.event_id,
            "session_id": ctx.event.session_id,
            "delivery_id": ctx.event.delivery_id,
            "pid": os.getpid(),
            "attempt": ctx.attempt,
        }
        append_line(path, {**record, "phase": "start", "t": time.time()})
        if hold > 0:
            await asyncio.sleep(hold)
        append_line(path, {**record, "phase": "done", "t": time.time()})
