"""configure_logging(): one structlog pipeline, JSON in production, readable on a terminal.

Secrets never reach a log line: `redact_secrets` masks well-known secret keys wherever they appear
in an event dict, and tracebacks are rendered without frame locals (a local `api_key` would
otherwise land in the log).
"""

import functools
import logging
import re
import sys
from collections.abc import Mapping
from json import JSONEncoder
from typing import Any

import structlog
from structlog.typing import EventDict, WrappedLogger

_SECRET_KEY = re.compile(
    r"(api[_-]?key|token|secret|signing[_-]?key|authorization|password|webhook-signature)",
    re.IGNORECASE,
)
_SECRET_VALUE = re.compile(r"(whsec_[A-Za-z0-9+/=]{8,}|sk-[A-Za-z0-9_\-]{8,}|Bearer\s+\S+)")
REDACTED = "**********"


# Values that cannot hold a secret: returned as they are, without a walk.
_PLAIN = frozenset({int, float, bool, type(None)})


@functools.lru_cache(maxsize=4096)
def _is_secret_key(key: str) -> bool:
    # Keys come from the code (and a few from configs), so the cache stays small.
    return _SECRET_KEY.search(key) is not None


def _scrub(value: Any) -> Any:
    if isinstance(value, str):
        # Every _SECRET_VALUE match contains one of these: substring tests spare the regex on
        # the ordinary values of every log line (ids, types, outcomes).
        if "whsec_" in value or "sk-" in value or "Bearer" in value:
            return _SECRET_VALUE.sub(REDACTED, value)
        return value
    if type(value) in _PLAIN:
        return value
    if isinstance(value, Mapping):
        return {
            k: (REDACTED if isinstance(k, str) and _is_secret_key(k) else _scrub(v))
            for k, v in value.items()
        }
    if isinstance(value, list | tuple):
        return type(value)(_scrub(v) for v in value)
    return value


def redact_secrets(_: WrappedLogger, __: str, event_dict: EventDict) -> EventDict:
    return {
        key: REDACTED if _is_secret_key(key) else _scrub(value) for key, value in event_dict.items()
    }


def _json_fallback(value: Any) -> Any:
    """What structlog's own renderer does with a value JSON has no form for."""
    structlog_form = getattr(value, "__structlog__", None)
    return structlog_form() if structlog_form is not None else repr(value)


# json.dumps with `default=` builds a new encoder per call; one line per delivery makes that
# measurable, so the line is encoded by one shared encoder (the same output).
_ENCODER = JSONEncoder(default=_json_fallback)


def _json_line(event_dict: EventDict, **_: Any) -> str:
    return _ENCODER.encode(event_dict)


class _CurrentStderr:
    """Writes to whatever `sys.stderr` is at the time of the write, not at configure time.

    A logger bound to the stream object seen at configuration keeps writing to it after it was
    swapped (pytest's capture, a daemon's redirect) and fails once it is closed.
    """

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()


def configure_logging(json: bool | None = None, level: str = "INFO", cache: bool = True) -> None:
    if json is None:
        json = not sys.stdout.isatty()
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    tail: list[Any]
    if json:
        tail = [
            structlog.processors.ExceptionRenderer(
                structlog.tracebacks.ExceptionDictTransformer(show_locals=False)
            ),
            redact_secrets,
            structlog.processors.JSONRenderer(serializer=_json_line),
        ]
    else:
        tail = [
            redact_secrets,
            structlog.dev.ConsoleRenderer(
                exception_formatter=structlog.dev.RichTracebackFormatter(show_locals=False)
            ),
        ]
    structlog.configure(
        processors=shared + tail,
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level)),
        logger_factory=structlog.PrintLoggerFactory(file=_CurrentStderr()),  # type: ignore[arg-type]
        cache_logger_on_first_use=cache,
    )
