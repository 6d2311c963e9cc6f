"""Pure: after a failed attempt, when to try again, or None for a dead letter.

`backoff_seconds` is idlehook's one backoff: handler runs (`next_attempt`, `[worker]
backoff_*`) and launches (sessions/launch_retry.py, its own base and cap) both wait by it.
"""

import random
from collections.abc import Callable
from datetime import datetime, timedelta

from handlers.config import WorkerSettings
from handlers.errors import PermanentError

__all__ = ["PermanentError", "backoff_seconds", "next_attempt"]


def backoff_seconds(attempts: int, *, base: float, maximum: float, jitter: float) -> float:
    """Exponential backoff capped at `maximum`, with "equal jitter" (half fixed, half random).

    `attempts` counts the attempt that just failed (1 after the first failure: `base`).
    `jitter` is in [0, 1): the random half keeps many failing callers from retrying in lockstep.
    """
    exponential = base * 2.0 ** max(attempts - 1, 0)
    ceiling = min(maximum, exponential)
    return ceiling / 2 + ceiling / 2 * jitter


def next_attempt(
    attempts: int,
    error: BaseException,
    now: datetime,
    settings: WorkerSettings,
    jitter: Callable[[], float] = random.random,
) -> datetime | None:
    """`attempts` counts the attempt that just failed (1 after the first failure)."""
    if isinstance(error, PermanentError) or attempts >= settings.max_attempts:
        return None
    delay = backoff_seconds(
        attempts,
        base=settings.backoff_base_seconds,
        maximum=settings.backoff_max_seconds,
        jitter=jitter(),
    )
    return now + timedelta(seconds=delay)
