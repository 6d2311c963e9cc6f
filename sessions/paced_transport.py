"""Every request of an SDK client through the shared Pacer: pacing below the SDK, not beside it.

The API limits each organization to 300 creates (agents, sessions, vaults) and 600 other agents,
sessions and vaults calls a minute. `PacedTransport` sits under the SDK's http client, so every
request a client idlehook builds sends (the worker's routing, every plugin's `ctx.client`, the
launcher, the sweeps, the SDK's own retries) waits for its slot in the store-backed budget that
all processes share; nothing has to remember to ask. A 429 pushes the whole class back by the
server's `retry-after` before the response goes up to the SDK, so the SDK's retry, which honours
the same header, comes back through here and waits its turn.

Routes outside those two classes are sent as they are: environments have a budget of their own
(60 a minute, read rarely and cached by the launcher), files follow the standard tier.
"""

import socket
from typing import Any, Literal

import httpx2 as httpx  # the SDK's own HTTP package (a fork of httpx)
import structlog
from anthropic import DEFAULT_CONNECTION_LIMITS, DefaultAsyncHttpxClient
from httpx2._utils import get_environment_proxies
from opentelemetry import trace

from sessions.metrics import API_PACED_CALLS
from sessions.pacing import Pacer
from sessions.retry_after import retry_after_seconds

log = structlog.get_logger(__name__)

# idlehook's spans are made under this name (idlehook/tracing.py).
TRACER_SCOPE = "idlehook"
RateClass = Literal["create", "read"]
# The resources whose calls the API counts: creating one is "create", anything else "read".
RATED = frozenset({"agents", "sessions", "vaults"})
# A 429 without a usable `retry-after` still holds the class back this long.
DEFAULT_RETRY_AFTER_S = 1.0
MAX_PUSH_BACK_S = 60.0


def rate_class(method: str, path: str) -> RateClass | None:
    """`POST /v1/sessions` -> "create", `GET /v1/sessions/{id}/events` -> "read",
    `GET /v1/files` -> None. A prefix before `/v1` (a gateway's) is allowed."""
    parts = path.split("?", 1)[0].strip("/").split("/")
    if "v1" not in parts:
        return None
    rest = parts[parts.index("v1") + 1 :]
    if not rest or rest[0] not in RATED:
        return None
    return "create" if method.upper() == "POST" and len(rest) == 1 else "read"


def session_in_path(path: str) -> str | None:
    """`/v1/sessions/sesn_1/events` -> "sesn_1": the session a call is about, whoever made it
    (a handler, the reaper, the reconciler, a follow-up)."""
    parts = path.split("?", 1)[0].strip("/").split("/")
    if "v1" not in parts:
        return None
    rest = parts[parts.index("v1") + 1 :]
    return rest[1] if len(rest) >= 2 and rest[0] == "sessions" and rest[1] else None


def _request_attributes(request: httpx.Request) -> dict[str, str]:
    url = request.url
    attributes = {
        "http.request.method": request.method,
        "url.full": f"{url.scheme}://{url.netloc.decode('ascii')}{url.path}",
        "server.address": url.host,
    }
    session_id = session_in_path(url.path)
    if session_id is not None:
        # Every API call about a session can be found by it, in any process's trace.
        attributes["idlehook.session_id"] = session_id
    return attributes


class PacedTransport(httpx.AsyncBaseTransport):
    """Wait for `pacer`'s slot before each rated request; after a 429, push its class back."""

    def __init__(self, inner: httpx.AsyncBaseTransport, pacer: Pacer) -> None:
        self.inner = inner
        self.pacer = pacer

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        # One client span per HTTP request (`[tracing]`), under the SDK's span of the API call
        # (the SDK's httpx fork is out of the httpx instrumentation's sight). Method, URL
        # without its query, status: never a header (the API key) or a body.
        with trace.get_tracer(TRACER_SCOPE).start_as_current_span(
            request.method,
            kind=trace.SpanKind.CLIENT,
            # An exception's text may carry a URL with its query; the class says enough here.
            record_exception=False,
            set_status_on_exception=False,
        ) as span:
            recording = span.is_recording()  # tracing off: no attribute is even built
            if recording:
                span.set_attributes(_request_attributes(request))
            try:
                response = await self._send(request, span)
            except BaseException as exc:
                if recording:
                    span.set_status(trace.StatusCode.ERROR, type(exc).__name__)
                    span.set_attribute("error.type", type(exc).__name__)
                raise
            if recording:
                span.set_attribute("http.response.status_code", response.status_code)
                if response.status_code >= 400:
                    span.set_status(trace.StatusCode.ERROR)
            return response

    async def _send(self, request: httpx.Request, span: trace.Span) -> httpx.Response:
        kind = rate_class(request.method, request.url.path)
        if kind is None:
            return await self.inner.handle_async_request(request)
        await self.pacer.acquire(kind)
        if span.is_recording():
            span.set_attribute("idlehook.rate_class", kind)
            span.add_event("idlehook.paced")  # the wait for the shared budget's slot ends here
        API_PACED_CALLS.labels(kind).inc()
        response = await self.inner.handle_async_request(request)
        if response.status_code == 429:
            asked = retry_after_seconds(response.headers)
            # Capped: the push-back is shared by every process and outlives restarts, and a
            # gateway's `retry-after: 3600` must not stall the whole class for an hour.
            wait = DEFAULT_RETRY_AFTER_S if asked is None else min(asked, MAX_PUSH_BACK_S)
            try:
                await self.pacer.penalise(kind, wait)
            except Exception as exc:
                # The 429 still goes up (the caller backs off); only the shared push-back is
                # lost, and the next slot taken is paced as usual.
                log.warning("pacer.penalise_failed", kind=kind, error=type(exc).__name__)
        return response

    async def aclose(self) -> None:
        await self.inner.aclose()


def paced_http_client(pacer: Pacer, **kwargs: Any) -> httpx.AsyncClient:
    """The SDK's own http client (its timeout, connection limits, TCP keep-alive, proxies from
    the environment) with every request, proxied or not, through `pacer`.

    httpx ignores `limits` and the environment's proxies once given a transport, so both are
    applied here, as the SDK applies them to the transports it builds itself.
    """

    def paced(proxy: str | None) -> PacedTransport:
        inner = httpx.AsyncHTTPTransport(
            limits=DEFAULT_CONNECTION_LIMITS, socket_options=_keepalive(), proxy=proxy
        )
        return PacedTransport(inner, pacer)

    # A pattern mounted to None (NO_PROXY) falls back to the default, paced, transport.
    mounts: dict[str, httpx.AsyncBaseTransport | None] = {
        pattern: None if proxy is None else paced(proxy)
        for pattern, proxy in get_environment_proxies().items()
    }
    return DefaultAsyncHttpxClient(transport=paced(None), mounts=mounts, **kwargs)


def _keepalive() -> list[tuple[int, int, int]]:
    """The SDK's TCP keep-alive: a connection idle behind a NAT is probed, not silently cut."""
    options = [(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)]
    for name, value in (("TCP_KEEPINTVL", 60), ("TCP_KEEPCNT", 5), ("TCP_KEEPIDLE", 60)):
        option = getattr(socket, name, None)
        if option is not None:
            options.append((socket.IPPROTO_TCP, option, value))
    return options
