"""POST /webhooks/anthropic as a plain ASGI callable: cap, verify, parse, record, answer.

This is the hot path, so it builds no Starlette Request/Response: it reads the body under the
size cap, holds the request only until the inbox's group commit has its delivery on disk, and
answers 204 with the outcome in a header (`idlehook-outcome: stored` or `duplicate`). No body:
Anthropic reads only the status, and a body is a second socket write per delivery. Handlers
never run here.
"""

import json
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any

import structlog
from starlette.types import Receive, Scope, Send

from receiver import metrics
from receiver.config import ReceiverConfig
from receiver.errors import (
    BadRequest,
    BadSignature,
    BodyTooLarge,
    HeaderTooLarge,
    ReceiverError,
    StoreDown,
)
from receiver.event import parse_event, type_label
from receiver.verify import verify
from store.inbox import Inbox, StoreUnavailable, session_id_for
from store.ingest import WEBHOOK

log = structlog.get_logger(__name__)

# Copied into the stored delivery; never webhook-signature or anything carrying auth.
KEPT_HEADERS = ("webhook-id", "webhook-timestamp", "user-agent", "content-type")
MAX_KEPT_HEADER = 512
# Signature headers are read from here; anything bigger is not a webhook we'd verify.
MAX_HEADER_VALUE = 8192
OUTCOME_HEADER = "idlehook-outcome"
_KEPT = frozenset(KEPT_HEADERS)

_JSON = [(b"content-type", b"application/json")]
# The only headers the intake reads, by raw name: the rest are size-checked, never decoded.
_READ = {name.encode(): name for name in (*KEPT_HEADERS, "webhook-signature", "content-length")}
_STORED = [(OUTCOME_HEADER.encode(), b"stored")]
_DUPLICATE = [(OUTCOME_HEADER.encode(), b"duplicate")]
_NO_BODY = {"type": "http.response.body", "body": b""}


class WebhookIntake:
    def __init__(
        self,
        config: ReceiverConfig,
        inbox: Inbox,
        now: Callable[[], datetime],
        on_new: Callable[[], None] | None = None,
    ) -> None:
        self.config = config
        self.inbox = inbox
        self.now = now
        # Told after a new delivery commits, so an in-process worker claims it at once.
        self.on_new = on_new

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = time.perf_counter()
        if scope["method"] != "POST":
            await _respond(send, 405, _error_body("method_not_allowed"), [(b"allow", b"POST")])
            return
        event_type = "unparsed"
        try:
            headers = _headers(scope)
            body = await _read_body(headers, receive, self.config.max_body_bytes)
            if body is None:
                return  # the client went away; nobody to answer
            now = self.now()
            key_index = verify(
                body, headers, self.config.signing_keys, now, self.config.timestamp_tolerance
            ).key_index
            metrics.key_matched(key_index)
            parsed = parse_event(body)
            event_type = type_label(parsed.event_type)
            # The delivery in its compact Row form (store/ingest.py), NewDelivery's fields in order.
            row = (
                parsed.event_id,
                parsed.event_type,
                parsed.resource_id,
                session_id_for(parsed.event_type, parsed.resource_id),
                parsed.created_at.timestamp(),
                now.timestamp(),
                parsed.text,
                {k: v[:MAX_KEPT_HEADER] for k, v in headers.items() if k in _KEPT},
                key_index,
                WEBHOOK,
            )
            try:
                result = await self.inbox.ingest_row(row)
            except StoreUnavailable as exc:
                log.warning("webhook.store_unavailable", error=str(exc))
                raise StoreDown("store_unavailable") from exc
        except ReceiverError as exc:
            await self._reject(send, exc, event_type)
            return
        outcome = "stored" if result.new else "duplicate"
        if result.new and self.on_new is not None:
            self.on_new()
        metrics.delivered(event_type, outcome)
        # No line per delivery: the inbox logs one per group commit naming every event in it
        # (a line per request cost more than the HMAC and the parse together).
        # A fresh list each time: ASGI middleware may append to a response's headers in place.
        answer = (_STORED if result.new else _DUPLICATE).copy()
        await send({"type": "http.response.start", "status": 204, "headers": answer})
        await send(_NO_BODY)
        metrics.ACK_SECONDS.observe(time.perf_counter() - started)

    async def _reject(self, send: Send, exc: ReceiverError, event_type: str) -> None:
        status = exc.status_code
        metrics.REJECTIONS.labels(exc.reason, str(status)).inc()
        metrics.delivered(event_type, "rejected")
        if isinstance(exc, BadSignature):
            metrics.SIGNATURE_FAILURES.labels(exc.reason).inc()
        log.info("webhook.rejected", reason=exc.reason, status=status)
        await _respond(send, status, _error_body(exc.reason))


def _headers(scope: Scope) -> dict[str, str]:
    """The headers the intake reads: lower-case names (ASGI guarantees it), first value wins."""
    out: dict[str, str] = {}
    for raw_name, raw_value in scope["headers"]:
        if len(raw_value) > MAX_HEADER_VALUE:
            raise HeaderTooLarge("header_too_large")
        name = _READ.get(raw_name)
        if name is not None and name not in out:
            out[name] = raw_value.decode("latin-1")
    return out


async def _read_body(headers: dict[str, str], receive: Receive, limit: int) -> bytes | None:
    declared = headers.get("content-length")
    if declared is not None:
        if not declared.isascii() or not declared.isdigit():
            raise BadRequest("bad_content_length")
        if int(declared) > limit:
            raise BodyTooLarge("body_too_large")
    # Counted while streaming too: a chunked body declares no length, and a declared one can lie.
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        chunk: bytes = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge("body_too_large")
        if not message.get("more_body", False):
            # Usually the whole body came in one message: no list, no join.
            return b"".join([*chunks, chunk]) if chunks else chunk
        chunks.append(chunk)


def _error_body(reason: str) -> bytes:
    return json.dumps({"error": reason}).encode()


async def _respond(
    send: Send, status: int, body: bytes, extra: list[tuple[bytes, bytes]] | None = None
) -> None:
    headers: list[Any] = [*_JSON, (b"content-length", str(len(body)).encode())]
    if extra:
        headers.extend(extra)
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
