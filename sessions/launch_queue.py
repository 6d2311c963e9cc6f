"""The launch queue's policy and its drain loop.

`decide` is pure: given the error a launch attempt raised, retry (when, and whether the session
may exist anyway) or fail. `LaunchDrainer` claims due launches from the store and hands each to
the launcher, a bounded number at a time; the shared pacer under the API client
(sessions/paced_transport.py), not the drainer, keeps the rate.
"""

import asyncio
import random
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

import anthropic
import sqlalchemy.exc
import structlog

from sessions.retry_after import retry_after_seconds
from store.models import Launch, utcnow

if TYPE_CHECKING:
    from sessions.launcher import Launcher

log = structlog.get_logger(__name__)

BACKOFF_BASE_S = 1.0
BACKOFF_MAX_S = 60.0


@dataclass(frozen=True)
class Decision:
    retry: bool
    # The create call may have reached the API: check for the session before sending another.
    outcome_unknown: bool = False
    # The server's own advice (429/503 `retry-after`), in seconds.
    retry_after_s: float | None = None
    message: str = ""
    # Our own store failed, not the launch: it neither counts as an attempt nor ends the launch
    # (if the store stays down, the lease runs out and the launch is claimed again later).
    store_error: bool = False


def decide(exc: Exception, *, sent: bool) -> Decision:
    """What to do after `exc`; `sent` says whether the create call itself had gone out."""
    if _transient_store_error(exc):
        return Decision(True, sent, None, f"store unavailable: {_store_detail(exc)}", True)
    if isinstance(exc, anthropic.APIConnectionError) and _transient_store_error(exc.__cause__):
        # The client's pacer could not reach the store to take a slot: nothing was sent.
        cause = exc.__cause__
        return Decision(True, False, None, f"store unavailable: {_store_detail(cause)}", True)
    if isinstance(exc, anthropic.RateLimitError):
        # A 429 is a clear "not created".
        return Decision(
            True, False, retry_after_seconds(exc.response.headers), f"rate limited: {exc.message}"
        )
    if isinstance(exc, anthropic.APITimeoutError):
        return Decision(True, sent, None, "timed out waiting for the API")
    if isinstance(exc, anthropic.APIConnectionError):
        return Decision(True, sent, None, f"could not reach the API: {exc.message}")
    if isinstance(exc, anthropic.APIStatusError):
        status = exc.status_code
        if status >= 500 or status in (408, 409):
            return Decision(
                True,
                sent,
                retry_after_seconds(exc.response.headers),
                f"API error {status}: {exc.message}",
            )
        return Decision(False, False, None, f"API refused the request ({status}): {_detail(exc)}")
    return Decision(False, False, None, f"{type(exc).__name__}: {exc}")


def _transient_store_error(exc: BaseException | None) -> bool:
    """A lost connection, a lock timeout, a database restarting: worth another go. Integrity
    and programming errors are bugs, and stay failures."""
    if isinstance(exc, sqlalchemy.exc.OperationalError | sqlalchemy.exc.InterfaceError):
        return True
    return isinstance(exc, sqlalchemy.exc.DBAPIError) and exc.connection_invalidated


def _store_detail(exc: BaseException | None) -> str:
    # The driver's own message, first line only: SQLAlchemy's str() adds the statement and
    # its parameters, which may carry request data.
    orig = getattr(exc, "orig", None) or exc
    first = (str(orig).strip().splitlines() or [""])[0]
    return f"{type(orig).__name__}: {first}"[:300]


def _detail(exc: anthropic.APIStatusError) -> str:
    body = exc.body
    if isinstance(body, dict):
        error = body.get("error")
        if isinstance(error, dict) and isinstance(error.get("message"), str):
            return str(error["message"])
    return exc.message


def backoff_delay(attempts: int, retry_after_s: float | None) -> float:
    """Seconds to wait before the next attempt: the server's advice when it gave one."""
    if retry_after_s is not None:
        return retry_after_s
    exponent = max(0, attempts - 1)
    return min(BACKOFF_MAX_S, BACKOFF_BASE_S * 2.0**exponent) * random.uniform(0.75, 1.0)


class LaunchDrainer:
    """Drain the launch queue: claim due launches, run up to `concurrency` at once.

    Several drainers (worker processes, `idlehook start`) can run against one store: claims are
    leased, and every create goes through the store-backed pacer their clients share.
    """

    def __init__(
        self,
        launcher: "Launcher",
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
