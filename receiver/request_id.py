"""A request id on every log line of a management request, and one line per request.

Mounted on the Starlette part only: the webhook path never reaches the middleware stack (see
ReceiverApp) and logs its own event and session ids. An incoming `X-Request-ID` is kept when it
looks like an id (a proxy's), otherwise one is made; it is echoed in the response. The path is
logged without its query string: `/?token=...` must not land in the log.
"""

import re
import secrets
import time

import structlog
from starlette.types import ASGIApp, Message, Receive, Scope, Send

log = structlog.get_logger(__name__)

HEADER = b"x-request-id"
_ACCEPTABLE = re.compile(rb"[A-Za-z0-9._\-]{8,64}")


def _incoming(scope: Scope) -> str | None:
    for name, value in scope.get("headers", []):
        if name == HEADER and _ACCEPTABLE.fullmatch(value):
            return str(value.decode("ascii"))
    return None


class RequestIdMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = _incoming(scope) or "req_" + secrets.token_hex(8)
        started = time.perf_counter()
        status = 500

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
                headers = [*message.get("headers", []), (HEADER, request_id.encode())]
                message = {**message, "headers": headers}
            await send(message)

        with structlog.contextvars.bound_contextvars(request_id=request_id):
            try:
                await self.app(scope, receive, send_with_id)
            finally:
                log.info(
                    "http.request",
                    method=scope.get("method", ""),
                    path=scope.get("path", ""),
                    status=status,
                    duration_ms=round((time.perf_counter() - started) * 1000, 2),
                )
