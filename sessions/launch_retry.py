"""Pure: after a launch attempt failed, retry (when, and whether the session may exist anyway)
or fail.

`decide_launch_retry` reads the error; `retry_delay` is the wait, the server's advice when it
gave one, else idlehook's one backoff (handlers/retry.py) under the launch queue's own base and
cap. The launcher (sessions/launcher.py) applies both; the drain loop is sessions/launch_queue.py.
"""

import random
from dataclasses import dataclass

import anthropic
import sqlalchemy.exc

from handlers.retry import backoff_seconds
from sessions.retry_after import retry_after_seconds

BACKOFF_BASE_S = 1.0
BACKOFF_MAX_S = 60.0


@dataclass(frozen=True)
class LaunchRetry:
    retry: bool
    # The create call may have reached the API: check for the session before sending another.
    outcome_unknown: bool = False
    # The server's own advice (429/503 `retry-after`), in seconds.
    retry_after_s: float | None = None
    message: str = ""
    # Our own store failed, not the launch: it neither counts as an attempt nor ends the launch
    # (if the store stays down, the lease runs out and the launch is claimed again later).
    store_error: bool = False


def decide_launch_retry(exc: Exception, *, sent: bool) -> LaunchRetry:
    """What to do after `exc`; `sent` says whether the create call itself had gone out."""
    if _transient_store_error(exc):
        return LaunchRetry(True, sent, None, f"store unavailable: {_store_detail(exc)}", True)
    if isinstance(exc, anthropic.APIConnectionError) and _transient_store_error(exc.__cause__):
        # The client's pacer could not reach the store to take a slot: nothing was sent.
        cause = exc.__cause__
        return LaunchRetry(True, False, None, f"store unavailable: {_store_detail(cause)}", True)
    if isinstance(exc, anthropic.RateLimitError):
        # A 429 is a clear "not created".
        return LaunchRetry(
            True, False, retry_after_seconds(exc.response.headers), f"rate limited: {exc.message}"
        )
    if isinstance(exc, anthropic.APITimeoutError):
        return LaunchRetry(True, sent, None, "timed out waiting for the API")
    if isinstance(exc, anthropic.APIConnectionError):
        return LaunchRetry(True, sent, None, f"could not reach the API: {exc.message}")
    if isinstance(exc, anthropic.APIStatusError):
        status = exc.status_code
        if status >= 500 or status in (408, 409):
            return LaunchRetry(
                True,
                sent,
                retry_after_seconds(exc.response.headers),
                f"API error {status}: {exc.message}",
            )
        return LaunchRetry(
            False, False, None, f"API refused the request ({status}): {_detail(exc)}"
        )
    return LaunchRetry(False, False, None, f"{type(exc).__name__}: {exc}")


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


def retry_delay(attempts: int, retry_after_s: float | None) -> float:
    """Seconds to wait before the next attempt: the server's advice when it gave one."""
    if retry_after_s is not None:
        return retry_after_s
    return backoff_seconds(
        attempts, base=BACKOFF_BASE_S, maximum=BACKOFF_MAX_S, jitter=random.random()
    )
