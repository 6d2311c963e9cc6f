"""What a client may hold of the receiver before its request is read: time, header bytes and
connections, enforced where the bytes arrive.

uvicorn (0.54) starts no timer before a request is complete and caps no header size, so a
client dripping header bytes holds its connection forever, silent connections pile up until
accept() fails for want of file descriptors, and one 64 MB header freezes the event loop for
seconds (httptools joins each header's pieces with `bytes +=`, quadratic in its size). An ASGI
guard cannot help: it runs only once the headers are parsed. So this is uvicorn's own
httptools protocol (the one `--http auto` picks with uvicorn[standard]) with, per connection:

- a phase: reading a head (request line and headers), reading a body, or neither (the app is
  answering, or a kept-alive connection waits; uvicorn's keep-alive timeout covers the latter);
- a deadline for the phase: `header_timeout` from the first byte of a request (or from the
  connection's start), `body_timeout` from the end of its headers. One sweep per server checks
  every connection's deadline a few times per timeout, so the hot path only stores a float;
- the bytes received since the last end of headers, outside a body: past `max_header_bytes` the
  request is answered 431 and the connection closed; the parser never sees more than the cap;
- a place in the server's pool: at `max_connections` a new connection closes the longest-open
  idle one (no request in flight), or is answered 503 if every one is busy. So file
  descriptors never run out under silent connections, and a real delivery always gets in.

Every cut is counted in `idlehook_http_connections_closed_total{reason}` and logged at most
once per reason every LOG_EVERY seconds.
"""

import asyncio
import math
import weakref
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol

import structlog
from prometheus_client import REGISTRY
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol
from uvicorn.server import ServerState

from receiver.metrics import LoopCounter

log = structlog.get_logger(__name__)

# Phases of a connection. Plain ints: they are compared on every data_received.
HEAD, BODY, REST = 0, 1, 2
LOG_EVERY = 10.0

CLOSED = LoopCounter(
    "idlehook_http_connections_closed",
    "Connections the HTTP layer cut: header_timeout, body_timeout, header_too_large (431), "
    "evicted (idle, to admit a new one at max_connections), refused (503, none idle).",
    ("reason",),
)


class HttpLimitSettings(Protocol):
    """The `[http]` settings read here (receiver does not import idlehook)."""

    header_timeout_seconds: float
    body_timeout_seconds: float
    max_header_bytes: int
    max_connections: int
    keep_alive_seconds: int


@dataclass(frozen=True)
class HttpLimits:
    header_timeout: float = 10.0
    body_timeout: float = 30.0
    max_header_bytes: int = 64 * 1024
    max_connections: int = 1000
    keep_alive: int = 75

    @classmethod
    def from_settings(cls, settings: HttpLimitSettings) -> "HttpLimits":
        return cls(
            header_timeout=settings.header_timeout_seconds,
            body_timeout=settings.body_timeout_seconds,
            max_header_bytes=settings.max_header_bytes,
            max_connections=settings.max_connections,
            keep_alive=settings.keep_alive_seconds,
        )

    @property
    def tick(self) -> float:
        """How often deadlines are checked: a cut comes at most this late."""
        return min(1.0, max(0.05, min(self.header_timeout, self.body_timeout) / 10))


class ConnectionPool:
    """One server's open connections, oldest first, and the sweep that enforces deadlines."""

    def __init__(self, limits: HttpLimits) -> None:
        self.limits = limits
        self.open: dict[GuardedHttpToolsProtocol, None] = {}
        self._sweep: asyncio.TimerHandle | None = None
        self._logged: dict[str, float] = {}
        self._unlogged: dict[str, int] = {}
        _POOLS.add(self)

    def admit(self, conn: "GuardedHttpToolsProtocol") -> bool:
        """Take `conn` in, closing the longest-open idle connection if at the cap; False if
        every open connection is busy (the caller refuses `conn`)."""
        if len(self.open) >= self.limits.max_connections:
            victim = next((c for c in self.open if c.idle()), None)
            if victim is None:
                self.cut(conn.loop, "refused")
                return False
            victim.evict()
        self.open[conn] = None
        if self._sweep is None:
            self._sweep = conn.loop.call_later(self.limits.tick, self.sweep, conn.loop)
        return True

    def discard(self, conn: "GuardedHttpToolsProtocol") -> None:
        self.open.pop(conn, None)

    def sweep(self, loop: asyncio.AbstractEventLoop) -> None:
        now = loop.time()
        for conn in [c for c in self.open if c.deadline <= now]:
            conn.expire(now)
        for reason in list(self._unlogged):
            self._log(reason, now, force=not self.open)
        self._sweep = loop.call_later(self.limits.tick, self.sweep, loop) if self.open else None

    def cut(self, loop: asyncio.AbstractEventLoop, reason: str) -> None:
        CLOSED.inc(reason)
        self._unlogged[reason] = self._unlogged.get(reason, 0) + 1
        self._log(reason, loop.time())

    def _log(self, reason: str, now: float, *, force: bool = False) -> None:
        """One line per reason at most every LOG_EVERY seconds, counting the cuts since."""
        if not force and now - self._logged.get(reason, -math.inf) < LOG_EVERY:
            return
        log.warning(
            "http.connections_cut",
            reason=reason,
            count=self._unlogged.pop(reason),
            open=len(self.open),
            max_connections=self.limits.max_connections,
        )
        self._logged[reason] = now


_POOLS: "weakref.WeakSet[ConnectionPool]" = weakref.WeakSet()


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with deadlines, a header cap and a connection pool.

    Bound to its limits and pool by `guarded_protocol()`, one class per server config."""

    limits: ClassVar[HttpLimits]
    pool: ClassVar[ConnectionPool]

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self.phase = HEAD
        self.deadline = math.inf
        self.head_bytes = 0  # received since the last end of headers, outside a body

    # -- asyncio.Protocol ---------------------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self.deadline = self.loop.time() + self.limits.header_timeout
        if not self.pool.admit(self):
            self.deadline = math.inf
            self._answer(503, b"Too many connections; retry shortly.")

    def connection_lost(self, exc: Exception | None) -> None:
        self.pool.discard(self)
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self.phase == BODY:
            super().data_received(data)
            return
        if self.phase == REST:  # the first byte of the next request on a kept-alive connection
            self.phase = HEAD
            self.deadline = self.loop.time() + self.limits.header_timeout
        cap = self.limits.max_header_bytes
        room = cap - self.head_bytes
        if len(data) <= room:
            self.head_bytes += len(data)
            super().data_received(data)
            return
        # Over the cap unless the head ends within what is left of it: the parser gets no more
        # than that, so a huge header costs one read, not a quadratic join.
        self.head_bytes = cap
        view = memoryview(data)
        if room > 0:
            super().data_received(view[:room])  # type: ignore[arg-type]  # httptools takes it
            if self.transport.is_closing():
                return
        if self.head_bytes >= cap:  # no end of headers within the cap
            self._too_large()
            return
        self.data_received(view[room:])  # type: ignore[arg-type]  # a body, or the next request

    # -- parser callbacks ---------------------------------------------------------------------

    def on_message_begin(self) -> None:
        if self.phase == REST:  # a pipelined request, begun within the previous one's bytes
            self.phase = HEAD
            self.deadline = self.loop.time() + self.limits.header_timeout
        super().on_message_begin()

    def on_headers_complete(self) -> None:
        self.phase = BODY
        self.head_bytes = 0
        self.deadline = self.loop.time() + self.limits.body_timeout
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        self.phase = REST
        self.deadline = math.inf
        super().on_message_complete()

    # -- the guard ----------------------------------------------------------------------------

    def busy(self) -> bool:
        """A request on this connection is being read or answered."""
        return self.phase == BODY or (self.cycle is not None and not self.cycle.response_complete)

    def idle(self) -> bool:
        """Nothing in flight (or already closing): the one to close to admit a new client."""
        return self.transport.is_closing() or not self.busy()

    def evict(self) -> None:
        self.pool.discard(self)
        self.deadline = math.inf
        if not self.transport.is_closing():
            self.pool.cut(self.loop, "evicted")
            self.transport.close()

    def expire(self, now: float) -> None:
        if self.transport.is_closing():
            self.pool.discard(self)
            return
        if self.phase == BODY and self.flow.read_paused:
            # Reading stopped on our side (the app is slow to take the body, or a pipelined
            # request waits): the client is not the one who is late.
            self.deadline = now + self.limits.body_timeout
            return
        in_flight = self.cycle is not None and not self.cycle.response_complete
        if self.phase == HEAD and in_flight:
            # A pipelined head, late, behind a response still being made: close after it.
            self.cycle.keep_alive = False
            self.deadline = math.inf
            self.pool.cut(self.loop, "header_timeout")
            return
        self.pool.discard(self)
        self.deadline = math.inf
        if self.phase == BODY:
            self.pool.cut(self.loop, "body_timeout")
            cycle = self.cycle
            if cycle is None or cycle.response_started:
                self.transport.close()
                return
            # The app waiting on the body is told the client is gone, and writes nothing.
            cycle.disconnected = True
            cycle.message_event.set()
            self._answer(408, b"Request body not received in time.")
            return
        self.pool.cut(self.loop, "header_timeout")
        if self.head_bytes:
            self._answer(408, b"Request headers not received in time.")
        else:
            self.transport.close()  # nothing was asked: nothing to answer

    def _too_large(self) -> None:
        self.pool.discard(self)
        self.pool.cut(self.loop, "header_too_large")
        self.deadline = math.inf
        if self.cycle is not None and not self.cycle.response_complete:
            self.transport.close()  # mid-response on a pipelined connection: no room to answer
        else:
            self._answer(431, b"Request header fields too large.")

    def _answer(self, status: int, message: bytes) -> None:
        content = [STATUS_LINE[status]]
        for name, value in self.server_state.default_headers:
            content.extend([name, b": ", value, b"\r\n"])
        content.extend(
            [
                b"content-type: text/plain; charset=utf-8\r\n",
                b"content-length: %d\r\n" % len(message),
                b"connection: close\r\n\r\n",
                message,
            ]
        )
        self.transport.write(b"".join(content))
        self.transport.close()


def guarded_protocol(limits: HttpLimits) -> type[GuardedHttpToolsProtocol]:
    """The protocol class for one server: its limits, and a pool of its own."""

    class Guarded(GuardedHttpToolsProtocol):
        pass

    Guarded.limits = limits
    Guarded.pool = ConnectionPool(limits)
    return Guarded


class _OpenConnections(Collector):
    def collect(self) -> Iterator[Metric]:
        pools = list(_POOLS)
        if not pools:
            return
        open_now = GaugeMetricFamily(
            "idlehook_http_open_connections", "HTTP connections open on the receiver."
        )
        open_now.add_metric([], sum(len(p.open) for p in pools))
        cap = GaugeMetricFamily(
            "idlehook_http_max_connections",
            "The receiver's connection cap (`[http] max_connections`, kept under the "
            "open-file limit).",
        )
        cap.add_metric([], sum(p.limits.max_connections for p in pools))
        yield open_now
        yield cap

    def describe(self) -> Iterator[Metric]:
        return iter(())


REGISTRY.register(_OpenConnections())
