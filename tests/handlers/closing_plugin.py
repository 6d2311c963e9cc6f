"""A test-only plugin with an `aclose`, loaded in-process and by idlehook subprocesses (through a
generated dist-info, tests/handlers/test_plugin_close.py).

It records what happened to it in `self.events`, and, when `CLOSING_PLUGIN_LOG` names a file,
appends the same as lines there (one O_APPEND write each), which is how a test reads a worker
process it cannot see into.
"""

import asyncio
import os

from idlehook import HandlerContext
from idlehook.settings import env_value


class ClosingPlugin:
    name = "closing"

    def __init__(self, hold_seconds: float = 0.0) -> None:
        self.hold_seconds = hold_seconds
        self.events: list[str] = []
        self.started = asyncio.Event()
        self._note("built")

    async def handle(self, ctx: HandlerContext) -> None:
        self._note("handle")
        self.started.set()
        await asyncio.sleep(self.hold_seconds)
        self._note("handled")

    async def aclose(self) -> None:
        self._note("closed")

    def _note(self, what: str) -> None:
        self.events.append(what)
        path = env_value("CLOSING_PLUGIN_LOG")
        if path:
            fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                os.write(fd, f"{what} {os.getpid()}\n".encode())
            finally:
                os.close(fd)
