"""redact_secrets(): the structlog processor that masks secrets in an event dict.

Well-known secret keys (`api_key`, `token`, `authorization`, ...) are masked wherever they
appear, nested ones too, and secret-shaped values (`whsec_...`, `sk-...`, `Bearer ...`) inside
any text. A leaf: idlehook/logs.py puts it in every pipeline, and the worker masks the error
texts it stores with it.
"""

import functools
import re
from collections.abc import Mapping
from typing import Any

from structlog.typing import EventDict, WrappedLogger

_SECRET_KEY = re.compile(
    r"(api[_-]?key|token|secret|signing[_-]?key|authorization|password|webhook-signature"
    # Object-store credentials (`[archive] storage_options`): s3fs names its access key `key`.
    r"|access[_-]?key|private[_-]?key|credential|^key$)",
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


MAX_ERROR_CHARS = 2000


def describe_error(exc: BaseException, limit: int = MAX_ERROR_CHARS) -> str:
    """One trimmed line for a stored error, a tool's error result or a span's status: type and
    message, secrets masked; never a traceback, never frame locals."""
    text = f"{type(exc).__name__}: {exc}".replace("\n", " ")
    masked = str(redact_secrets(None, "", {"error": text})["error"])
    return masked[:limit]
