"""A rate gate in the store: every process shares one request budget per rate class.

Each class ("create", "read") has one row holding the next free slot, in epoch seconds
(store/rate_slots.py). A caller takes a slot with a single atomic UPDATE (`next_at =
max(next_at, now) + interval RETURNING`), so two callers, in one process or in ten, never get
the same slot; then it sleeps until its slot. The result is an evenly spaced stream at the
configured rate, whoever sends it: no burst for the API to answer with 429s. After a 429 anyway,
`penalise` pushes the whole class back by the server's `retry-after`.

The store is reached in a thread, never on the event loop. Callers do not use this directly:
sessions/paced_transport.py puts every API request of the SDK clients idlehook builds through it.
"""

import asyncio
import time
from collections import deque
from collections.abc import Awaitable, Callable, Mapping

import structlog
from sqlalchemy.engine import Engine

from store import rate_slots

log = structlog.get_logger(__name__)

DEFAULT_RPM: Mapping[str, float] = {"create": 300, "read": 600}


class Pacer:
    """`await acquire(kind)` before each API call of that class; `await penalise` after a 429."""

    def __init__(
        self,
        engine: Engine,
        rpm: Mapping[str, float] = DEFAULT_RPM,
        *,
        now: Callable[[], float] = time.time,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        block: int = 1,
    ) -> None:
        """`block` > 1 reserves that many consecutive slots per store round trip (a busy
        drainer's commits drop that much); a reserved slot not used in time is dropped, never
        spent late, so reserving ahead can only lower the rate."""
        if block < 1:
            raise ValueError("block must be at least 1")
        for kind, rate in rpm.items():
            if rate <= 0:
                raise ValueError(f"rate for {kind!r} must be positive, got {rate}")
        self.engine = engine
        self.rpm = dict(rpm)
        self._now = now
        self._sleep = sleep
        self._known: set[str] = set()
        self.block = block
        self._reserved: dict[str, deque[float]] = {}

    def interval(self, kind: str) -> float:
        try:
            return 60.0 / self.rpm[kind]
        except KeyError:
            raise ValueError(f"unknown rate class {kind!r}; known: {sorted(self.rpm)}") from None

    async def acquire(self, kind: str) -> None:
        """Wait for this caller's own slot in `kind`'s budget."""
        interval = self.interval(kind)
        reserved = self._reserved.setdefault(kind, deque())
        while reserved and reserved[0] < self._now() - interval:
            reserved.popleft()  # too late to use without bunching up with the next one
        if not reserved:
            reserved.extend(await asyncio.to_thread(self.take_slots, kind, self.block))
        slot = reserved.popleft()
        delay = slot - self._now()
        if delay > 0:
            await self._sleep(delay)

    def take_slot(self, kind: str) -> float:
        """Reserve the next slot and return its time (epoch seconds); no waiting."""
        return self.take_slots(kind, 1)[0]

    def take_slots(self, kind: str, count: int) -> list[float]:
        """Reserve `count` consecutive slots in one atomic step (blocking: call in a thread)."""
        interval = self.interval(kind)
        self._ensure_row(kind)
        first = rate_slots.take(self.engine, kind, interval * count, self._now)
        return [first + interval * i for i in range(count)]

    async def penalise(self, kind: str, retry_after_s: float) -> None:
        """Hold every caller of `kind` back until `retry_after_s` from now (a 429's advice)."""
        self.interval(kind)
        until = self._now() + max(0.0, retry_after_s)
        await asyncio.to_thread(self._push_back, kind, until)
        self._reserved.pop(kind, None)  # reserved before the penalty: not ours to use now
        log.warning("pacer.penalised", kind=kind, retry_after_s=retry_after_s)

    def _push_back(self, kind: str, until: float) -> None:
        self._ensure_row(kind)
        rate_slots.push_back(self.engine, kind, until)

    def _ensure_row(self, kind: str) -> None:
        if kind not in self._known:
            rate_slots.ensure(self.engine, kind)
            self._known.add(kind)
