"""Refused webhook requests, counted in memory and added to the store every few seconds.

`idlehook status` shows them (store/rejections.py). A write per refused request would let a
flood of bad requests load the database the good ones need, so the webhook path only bumps a
dict on the event loop; a timer armed by the first rejection after a flush hands the counts
to a thread once per `every` seconds. What the store cannot take is kept for the next flush.
"""

import asyncio
import contextlib
from collections.abc import Callable
from datetime import datetime, timedelta

import structlog
from sqlalchemy.engine import Engine

from store import rejections

log = structlog.get_logger(__name__)

FLUSH_SECONDS = 2.0
# How often a receiver folds the table's old minutes (store/rejections.py).
FOLD_EVERY = timedelta(hours=1)
# On shutdown, a store that does not answer is not waited for longer than this.
CLOSE_SECONDS = 5.0


class RejectionTally:
    def __init__(
        self, engine: Engine | None, now: Callable[[], datetime], every: float = FLUSH_SECONDS
    ) -> None:
        self.engine = engine  # None: counted, never stored (an intake without a store)
        self.now = now
        self.every = every
        self.counts: dict[tuple[str, int], int] = {}
        self._armed: asyncio.TimerHandle | None = None
        self._flushing: asyncio.Task[None] | None = None
        self._folded_at: datetime | None = None
        self._failing = False
        self._closed = False

    def count(self, reason: str, status: int) -> None:
        key = (reason, status)
        self.counts[key] = self.counts.get(key, 0) + 1
        idle = self._armed is None and self._flushing is None
        if idle and self.engine is not None and not self._closed:
            self._arm()

    def _arm(self) -> None:
        loop = asyncio.get_running_loop()
        self._armed = loop.call_later(self.every, self._start)

    def _start(self) -> None:
        self._armed = None
        self._flushing = asyncio.get_running_loop().create_task(self._flush_then_rearm())

    async def _flush_then_rearm(self) -> None:
        try:
            await self.flush()
        finally:
            self._flushing = None
            if self.counts and not self._closed:
                self._arm()  # counted meanwhile, or kept after a failed flush

    async def flush(self) -> None:
        """Add what was counted since the last flush to the store."""
        counts, self.counts = self.counts, {}
        if not counts or self.engine is None:
            return
        now = self.now()
        fold = self._folded_at is None or now - self._folded_at >= FOLD_EVERY
        try:
            await asyncio.to_thread(rejections.add, self.engine, counts, now, fold=fold)
        except Exception as exc:  # the store is down: keep them for the next flush
            for key, n in counts.items():
                self.counts[key] = self.counts.get(key, 0) + n
            if not self._failing:
                log.warning("webhook.rejections_not_stored", error=type(exc).__name__)
            self._failing = True
            return
        self._failing = False
        if fold:
            self._folded_at = now

    async def close(self) -> None:
        """Store what is still counted (the receiver is stopping), within CLOSE_SECONDS."""
        self._closed = True
        if self._armed is not None:
            self._armed.cancel()
            self._armed = None
        with contextlib.suppress(TimeoutError):
            if self._flushing is not None:
                await asyncio.wait_for(asyncio.shield(self._flushing), CLOSE_SECONDS)
            await asyncio.wait_for(self.flush(), CLOSE_SECONDS)
