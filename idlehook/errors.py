"""Errors a command reports as one line, importable without the SDK or the store.

`idlehook.cli` catches these to print `error: ...` and exit; `idlehook.wiring` re-exports
`ConfigError`, where plugins and older code import it from. A database that cannot be
reached is one line naming it (its password masked), never a traceback.
"""

import sys
from collections.abc import Callable


class ConfigError(Exception):
    """The configuration cannot be used; the message says what to fix."""


def masked_url(url: str) -> str:
    """`url` as it may be shown: the password replaced by ***."""
    from store.engine import shown_url

    try:
        return shown_url(url)
    except Exception:  # not a URL SQLAlchemy reads: show nothing of it that may be a secret
        return url.split("@")[-1]


def database_error(exc: BaseException, url: Callable[[], str | None]) -> str | None:
    """One line for a database that cannot be reached or used, naming it (password masked),
    or None when `exc` is no database error. `url` is asked only when it is one."""
    # Without SQLAlchemy imported, no exception can be one of its own.
    sa_exc = sys.modules.get("sqlalchemy.exc")
    if sa_exc is None:
        return None
    found: BaseException | None = exc
    seen = 0
    while found is not None and not isinstance(found, sa_exc.DBAPIError) and seen < 10:
        found = found.__cause__ or found.__context__
        seen += 1
    if not isinstance(found, sa_exc.DBAPIError):
        return None
    where = url()
    name = masked_url(where) if where else "the database"
    reason = _reason(found.orig if found.orig is not None else found)
    if isinstance(found, sa_exc.OperationalError):
        return f"cannot open database {name}: {reason}"
    return f"database {name}: {reason}"


def _reason(exc: BaseException) -> str:
    text = str(exc).strip()
    lowered = text.lower()
    for known in ("connection refused", "timeout expired", "does not exist", "no route to host"):
        if known in lowered:
            # psycopg's text spans lines and repeats itself per address tried; the cause is enough.
            line = next(ln for ln in text.splitlines() if known in ln.lower())
            return _tail(line, known)
    first = text.splitlines()[0] if text else type(exc).__name__
    return first[:200]


def _tail(line: str, known: str) -> str:
    if known == "connection refused":
        return "connection refused"
    return line.split(": ")[-1].strip()[:200] if ": " in line else line.strip()[:200]
