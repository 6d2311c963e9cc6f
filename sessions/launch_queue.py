"""The launch queue's drain loop.

`LaunchDrainer` claims due launches from the store and hands each to the launcher, a bounded
number at a time; the shared pacer under the API client (sessions/paced_transport.py), not the
drainer, keeps the rate. What a failed attempt does next is sessions/launch_retry.py (pure).
"""

import asyncio
import uuid
from collections.abc import Callable
from datetime import datetime

import structlog

from sessions.launcher import Launcher
from store.models import Launch, utcnow

log = structlog.get_logger(__name__)


class LaunchDrainer:
    """Drain the launch queue: claim due launches, run up to `concurrency` at once.

    Several drainers (worker processes, `idlehook start`) can run against one store: claims are
    leased, and every create goes through the store-backed pacer their clients share.
    """

    def __init__(
        self,
        launcher: Launcher,
        *,
        concurrency: int = 16,
        poll_seconds: float = 0.5,
        worker_id: str | None = None,
        now: Callable[[], datetime] = utcnow,
    ) -> None:
        self.launcher = launcher
        self.concurrency = concurrency
        self.poll_seconds = poll_seconds
        self.worker_id = worker_id or f"drainer-{uuid.uuid4().hex[:12]}"
        self._now = now
        self.stopping = asyncio.Event()
        self.processed = 0

    async def run(self, drain: bool = False) -> int:
        """Work until `stopping` is set; with `drain`, return once no launch is unfinished.

        Returns the number of launch attempts made.
        """
        store = self.launcher.store
        tasks: set[asyncio.Task[None]] = set()
        wake = asyncio.Event()
        try:
            while not self.stopping.is_set():
                room = self.concurrency - len(tasks)
                claimed = []
                if room > 0:
                    claimed = await asyncio.to_thread(
                        store.claim, self.worker_id, limit=room, lease=self.launcher.lease
                    )
                for launch in claimed:
                    task = asyncio.create_task(self._one(launch, wake))
                    tasks.add(task)
                    task.add_done_callback(tasks.discard)
                if claimed and len(tasks) < self.concurrency:
                    continue
                if drain and not tasks and not await asyncio.to_thread(store.unfinished):
                    return self.processed
                await self._pause(wake, await self._idle_for(bool(tasks)))
        finally:
            if tasks:
                await asyncio.gather(*tasks, return_exceptions=True)
        return self.processed

    async def _one(self, launch: Launch, wake: asyncio.Event) -> None:
        try:
            await self.launcher.process(launch)
        except Exception:
            log.exception("launch.drain_error")
        finally:
            self.processed += 1
            wake.set()

    async def _idle_for(self, busy: bool) -> float:
        if busy:
            return self.poll_seconds
        due = await asyncio.to_thread(self.launcher.store.next_due)
        if due is None:
            return self.poll_seconds
        return min(self.poll_seconds, max(0.0, (due - self._now()).total_seconds()))

    async def _pause(self, wake: asyncio.Event, seconds: float) -> None:
        waiters = [asyncio.create_task(wake.wait()), asyncio.create_task(self.stopping.wait())]
        try:
            await asyncio.wait(waiters, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in waiters:
                waiter.cancel()
            wake.clear()
