"""configure_logging(): one structlog pipeline, JSON in production, readable on a terminal.

Secrets never reach a log line: `redact_secrets` (handlers/redact.py, where the worker masks
error texts with it too) masks well-known secret keys wherever they appear in an event dict, and
tracebacks are rendered without frame locals (a local `api_key` would otherwise land in the log).
"""

import logging
import sys
from json import JSONEncoder
from typing import Any

import structlog
from structlog.typing import EventDict

from handlers.redact import redact_secrets


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


# The level the command line chose (`--verbose`, `--quiet`, `--log-level`, or the command's
# default), kept so a later reconfiguration (the config file's format, `serve`'s cached
# pipeline) does not bring back lines the user silenced.
_level = "INFO"

LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


def saved() -> tuple[dict[str, Any], str]:
    """The logging configuration now, for `restore` (a command run in-process, by a test or
    the demo, hands back the caller's)."""
    return structlog.get_config(), _level


def restore(config: tuple[dict[str, Any], str]) -> None:
    global _level
    structlog.configure(**config[0])
    _level = config[1]


def configure_logging(
    json: bool | None = None, level: str | None = None, cache: bool = True
) -> None:
    """Logs to stderr as JSON (off a terminal) or readable lines; `level` None keeps the level
    last chosen."""
    global _level
    if level is None:
        level = _level
    else:
        level = _level = level.upper()
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
