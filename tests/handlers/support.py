"""Test plugins and a helper to run a worker until a condition holds."""

import asyncio
import time
from collections.abc import Callable
from typing import Any

from handlers.builtin.answer import AnswerHandler
from handlers.builtin.archive import ArchiveHandler
from handlers.builtin.delete import DeleteHandler
from handlers.builtin.forward import ForwardHandler
from handlers.builtin.log import LogHandler
from handlers.plugin_config import plugin_tables
from handlers.registry import build
from handlers.worker import Worker
from idlehook import Handler, HandlerContext, PermanentError
from idlehook.settings import Settings

_BUILTINS: dict[str, type[Any]] = {
    cls.name: cls
    for cls in (LogHandler, ArchiveHandler, ForwardHandler, DeleteHandler, AnswerHandler)
}


def builtins(settings: Settings, *names: str) -> list[Handler]:
    """The named built-ins (default: log, archive, forward, delete), built the way startup
    builds them: their tables from `settings`, validated by their `Config`."""
    tables = plugin_tables(settings)
    chosen = names or ("log", "archive", "forward", "delete")
    return [build(_BUILTINS[name], name, tables.get(name)) for name in chosen]


class Recorder:
    """Records every call; fails the first `fail_times` calls (permanently if asked)."""

    def __init__(
        self, name: str = "recorder", fail_times: int = 0, permanent: bool = False, delay: float = 0
    ) -> None:
        self.name = name
        self.fail_times = fail_times
        self.permanent = permanent
        self.delay = delay
        self.calls: list[tuple[str, str | None, int]] = []
        self.active: dict[str, int] = {}
        self.overlaps: list[str] = []

    async def handle(self, ctx: HandlerContext) -> None:
        lane = ctx.event.session_id or ctx.event.event_id
        self.active[lane] = self.active.get(lane, 0) + 1
        if self.active[lane] > 1:
            self.overlaps.append(lane)
        try:
            self.calls.append((ctx.event.event_id, ctx.event.session_id, ctx.attempt))
            if self.delay:
                await asyncio.sleep(self.delay)
            if len(self.calls) <= self.fail_times:
                if self.permanent:
                    raise PermanentError("told to give up")
                raise RuntimeError(f"failure {len(self.calls)} api_key=sk-ant-secret123456")
        finally:
            self.active[lane] -= 1


async def run_until(worker: Worker, predicate: Callable[[], Any], timeout: float = 20.0) -> Any:
    """Run the worker in the background until `predicate()` (called in a thread) is truthy."""
    task = asyncio.create_task(worker.run())
    deadline = time.monotonic() + timeout
    try:
        while True:
            value = await asyncio.to_thread(predicate)
            if value:
                return value
            if task.done():
                task.result()
                raise AssertionError("worker stopped early")
            if time.monotonic() > deadline:
                raise AssertionError(f"condition not met within {timeout}s")
            await asyncio.sleep(0.02)
    finally:
        worker.stop()
        await asyncio.wait_for(task, 20)
