"""Pure: after a failed attempt, when to try again, or None for a dead letter."""

import random
from collections.abc import Callable
from datetime import datetime, timedelta

from handlers.errors import PermanentError
from idlehook.settings import WorkerSettings

__all__ = ["PermanentError", "backoff_seconds", "next_attempt"]


def backoff_seconds(attempts: int, settings: WorkerSettings, jitter: float) -> float:
    """Exponential backoff capped at the maximum, with "equal jitter" (half fixed, half random).

    `jitter` is in [0, 1): the random half keeps many failing runs from retrying in lockstep.
    """
    exponential = settings.backoff_base_seconds * 2.0 ** max(attempts - 1, 0)
    ceiling = min(settings.backoff_max_seconds, exponential)
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
    return now + timedelta(seconds=backoff_seconds(attempts, settings, jitter()))
