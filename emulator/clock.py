"""Emulated time: durations run `speed` times faster than the wall clock.

Object timestamps stay on the real wall clock (webhook signatures and client-side filters need
it); run times, backoffs, rate-limit windows, billing and cron schedules use the emulated clock,
so a test at speed 60 sees a "minute" pass in one second.
"""

import asyncio
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta


def utcnow() -> datetime:
    return datetime.now(UTC)


def rfc3339(value: datetime) -> str:
    # Fixed width, so the strings sort like the instants they name.
    return value.astimezone(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


class SpeedClock:
    def __init__(
        self,
        speed: float = 1.0,
        monotonic: Callable[[], float] = time.monotonic,
        wall: Callable[[], datetime] = utcnow,
    ) -> None:
        self._monotonic = monotonic
        self._wall = wall
        self._speed = speed
        self._base_real = monotonic()
        self._base_emulated = 0.0
        self._wall_origin = wall()

    @property
    def speed(self) -> float:
        return self._speed

    def set_speed(self, speed: float) -> None:
        # Rebase so emulated time already elapsed keeps its value across the change.
        self._base_emulated = self.elapsed()
        self._base_real = self._monotonic()
        self._speed = speed

    def elapsed(self) -> float:
        """Emulated seconds since the clock started; monotonic."""
        return self._base_emulated + (self._monotonic() - self._base_real) * self._speed

    def now(self) -> datetime:
        """Real wall-clock time, for object timestamps."""
        return self._wall()

    def emulated_wall(self, elapsed: float | None = None) -> datetime:
        """Wall-clock time as the emulated world sees it (now, or at emulated second
        `elapsed`): for cron schedules and the billing report."""
        at = self.elapsed() if elapsed is None else elapsed
        return self._wall_origin + timedelta(seconds=at)

    def real_seconds(self, emulated: float) -> float:
        return max(0.0, emulated / self._speed)

    async def sleep(self, emulated: float) -> None:
        """Return once `emulated` seconds have passed on this clock, never sooner.

        The loop's timers may fire a hair early (uvloop keeps whole milliseconds), and a speed
        change moves the real deadline: so sleep again until the emulated time has elapsed.
        """
        until = self.elapsed() + emulated
        left = emulated
        while True:
            await asyncio.sleep(self.real_seconds(left))
            left = until - self.elapsed()
            if left <= 0:
                return
