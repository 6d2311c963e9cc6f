"""How `idlehook serve` runs uvicorn: the open-file limit, and the one server configuration.

`uvicorn_config()` is what `serve` runs and what the tests run: the guarded httptools protocol
(receiver/http_guard.py), no WebSocket upgrades (nothing here speaks it), and the keep-alive
Anthropic's retries reuse.
"""

import contextlib
from dataclasses import replace
from typing import Any

import structlog
import uvicorn

from receiver.http_guard import HttpLimits, guarded_protocol

try:
    import resource
except ImportError:  # pragma: no cover  (Windows: no rlimits)
    resource = None  # type: ignore[assignment]

log = structlog.get_logger(__name__)

# File descriptors kept for everything but client connections: the database pool, the inbox
# writer's pipes, the API client's connections, logs, the worker's files.
RESERVED_FILES = 256
MIN_CONNECTIONS = 16


def open_file_limit() -> int | None:
    """The soft RLIMIT_NOFILE, or None where there is none."""
    if resource is None:
        return None
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    return None if soft == resource.RLIM_INFINITY else soft


def raise_open_file_limit() -> tuple[int | None, int | None]:
    """Raise the soft RLIMIT_NOFILE to the hard limit (the common soft 1,024 is a few hundred
    silent clients); (before, after). Where the hard limit is unlimited, as high as the kernel
    takes. Children (the inbox writer) inherit it."""
    if resource is None:
        return None, None
    before, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    unlimited = resource.RLIM_INFINITY
    if before == unlimited:
        return None, None
    # An unlimited hard limit: Linux takes up to fs.nr_open (2**20 by default), macOS 10240.
    for target in [hard] if hard != unlimited else [1 << 20, 10240]:
        if target <= before:
            break
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (ValueError, OSError):
            continue
        break
    return before, open_file_limit()


def fit_to_open_files(limits: HttpLimits, open_files: int | None) -> HttpLimits:
    """`max_connections` lowered, if need be, to leave RESERVED_FILES descriptors free: past
    that, accept() fails and nobody gets in, not even the health check."""
    if open_files is None:
        return limits
    room = max(MIN_CONNECTIONS, open_files - RESERVED_FILES)
    if limits.max_connections <= room:
        return limits
    return replace(limits, max_connections=room)


def prepare(limits: HttpLimits) -> HttpLimits:
    """At `serve` start: raise the open-file limit, fit the connection cap under it, log both."""
    before, after = raise_open_file_limit()
    fitted = fit_to_open_files(limits, after)
    log.info(
        "serve.open_files",
        soft_before=before,
        soft=after,
        max_connections=fitted.max_connections,
        header_timeout_seconds=fitted.header_timeout,
        body_timeout_seconds=fitted.body_timeout,
        max_header_bytes=fitted.max_header_bytes,
    )
    if fitted.max_connections < limits.max_connections:
        log.warning(
            "serve.max_connections_lowered",
            configured=limits.max_connections,
            max_connections=fitted.max_connections,
            open_files=after,
            hint="raise the hard limit: LimitNOFILE= (systemd), ulimits (compose), ulimit -Hn",
        )
    return fitted


def uvicorn_config(app: Any, limits: HttpLimits, *, host: str, port: int) -> uvicorn.Config:
    return uvicorn.Config(
        app,
        host=host,
        port=port,
        http=guarded_protocol(limits),
        ws="none",
        log_level="warning",  # structlog speaks for the app; uvicorn only for itself
        access_log=False,
        # Anthropic keeps connections open between retries; don't drop them mid-wait.
        timeout_keep_alive=limits.keep_alive,
        # Only read by the h11 protocol; the same cap, should anything run that one.
        h11_max_incomplete_event_size=limits.max_header_bytes,
    )


def run(config: uvicorn.Config) -> bool:
    """Serve until told to stop (what `uvicorn.run` does for one process); False if the server
    never started (the port taken, the app's startup failed)."""
    server = uvicorn.Server(config)
    with contextlib.suppress(KeyboardInterrupt):
        server.run()
    return server.started
