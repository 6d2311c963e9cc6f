"""POST /webhooks/anthropic as a plain ASGI callable: cap, verify, parse, record, answer.

This is the hot path, so it builds no Starlette Request/Response: it reads the body under the
size cap, holds the request only until the inbox's group commit has its delivery on disk, and
answers 204 with the outcome in a header (`idlehook-outcome: stored` or `duplicate`). No body:
Anthropic reads only the status, and a body is a second socket write per delivery. Handlers
never run here.

A verified delivery is acknowledged whenever any durable medium can take it: when the store
cannot commit it, the local journal (store/journal.py) takes it and the answer is 202
(`journaled`); only if the journal cannot either is it a 503. A signed body that is no envelope
idlehook knows is kept raw (store/unrecognised.py) and answered 204 (`unrecognised`): a 4xx
would count towards Anthropic disabling the endpoint, and it is not routed to any handler.
"""

import json
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any

import structlog
from opentelemetry.trace import Span, Tracer
from starlette.types import Receive, Scope, Send

from receiver import metrics, spans
from receiver.config import ReceiverConfig
from receiver.errors import (
    BadEvent,
    BadRequest,
    BadSignature,
    BodyTooLarge,
    HeaderTooLarge,
    ReceiverError,
    StoreDown,
)
from receiver.event import parse_event, type_label
from receiver.keyring import KeyRing
from receiver.rejection_tally import RejectionTally
from receiver.verify import verify
from store.inbox import Inbox, StoreUnavailable, session_id_for
from store.ingest import WEBHOOK
from store.journal import Journal, JournalUnavailable
from store.journal_records import Record
from store.unrecognised import Unrecognised

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
_NO_BODY = {"type": "http.response.body", "body": b""}
# Outcomes: the `idlehook-outcome` header and the deliveries metric's `outcome` label.
STORED = "stored"
DUPLICATE = "duplicate"
JOURNALED = "journaled"  # durable in the local journal; moved into the store later
UNRECOGNISED = "unrecognised"  # signed, but no envelope we know: kept raw, not routed
_ANSWERS: dict[str, tuple[int, list[tuple[bytes, bytes]]]] = {
    STORED: (204, [(OUTCOME_HEADER.encode(), b"stored")]),
    DUPLICATE: (204, [(OUTCOME_HEADER.encode(), b"duplicate")]),
    UNRECOGNISED: (204, [(OUTCOME_HEADER.encode(), b"unrecognised")]),
    # 202: accepted, not yet in the store.
    JOURNALED: (202, [(OUTCOME_HEADER.encode(), b"journaled"), (b"content-length", b"0")]),
}


class WebhookIntake:
    def __init__(
        self,
        config: ReceiverConfig,
        inbox: Inbox,
        now: Callable[[], datetime],
        on_new: Callable[[], None] | None = None,
        keys: KeyRing | None = None,
        journal: Journal | None = None,
        tracer: Tracer | None = None,
    ) -> None:
        self.config = config
        # The keys verified against: the environment's, plus the store's when the app's
        # lifespan refreshes them (receiver/keyring.py); read per request, never the database.
        self.keys = keys or KeyRing(config.signing_keys, now=now)
        self.inbox = inbox
        self.now = now
        # Told after a new delivery commits, so an in-process worker claims it at once.
        self.on_new = on_new
        # Where a verified delivery goes when the store cannot commit it (None: a 503).
        self.journal = journal
        # The latest write to the store failed (readiness reports it; a read may still work).
        self.store_failing = False
        # Refused requests, for `idlehook status`: counted here, stored every few seconds.
        self.rejections = RejectionTally(getattr(inbox, "engine", None), now)
        # `[tracing]` on: each request's spans (receiver/spans.py). None: a None check a step.
        self.tracer = tracer

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = time.perf_counter()
        tracer = self.tracer
        span = None if tracer is None else spans.receive(tracer)
        if scope["method"] != "POST":
            await _respond(send, 405, _error_body("method_not_allowed"), [(b"allow", b"POST")])
            spans.finished(span, "rejected", 405)
            return
        event_type = "unparsed"
        commit: Span | None = None
        try:
            headers = _headers(scope)
            body = await _read_body(headers, receive, self.config.max_body_bytes)
            if body is None:
                spans.finished(span, "disconnected")
                return  # the client went away; nobody to answer
            now = self.now()
            verified = verify(
                body, headers, self.keys.current, now, self.config.timestamp_tolerance
            )
            key_index = verified.key_index
            metrics.key_matched(verified.key_label)
            kept = {k: v[:MAX_KEPT_HEADER] for k, v in headers.items() if k in _KEPT}
            try:
                parsed = parse_event(body)
            except BadEvent as exc:
                event_type = UNRECOGNISED
                # verify() required a webhook-id: the message id, the same on every retry.
                item = Unrecognised(
                    headers["webhook-id"], now.timestamp(), body, kept, key_index, exc.reason
                )
                if span is not None:  # kept raw as received: no trace context added to it
                    spans.identified(span, item.message_id, UNRECOGNISED, None, None)
                outcome = await self._keep_unrecognised(item)
            else:
                event_type = type_label(parsed.event_type)
                session_id = session_id_for(parsed.event_type, parsed.resource_id)
                if span is not None:
                    # Its traceparent is kept with the delivery: routing continues this trace.
                    spans.identified(span, parsed.event_id, parsed.event_type, session_id, kept)
                # The delivery in its compact Row form (store/ingest.py), NewDelivery's fields
                # in order.
                row = (
                    parsed.event_id,
                    parsed.event_type,
                    parsed.resource_id,
                    session_id,
                    parsed.created_at.timestamp(),
                    now.timestamp(),
                    parsed.text,
                    kept,
                    key_index,
                    WEBHOOK,
                )
                if tracer is not None and span is not None:
                    commit = spans.commit(tracer, span, parsed.event_id, session_id)
                try:
                    result = await self.inbox.ingest_row(row)
                except StoreUnavailable as exc:
                    if commit is not None:
                        spans.store_failed(commit, exc)
                    outcome = await self._journal(row, exc)
                else:
                    self.store_failing = False
                    outcome = STORED if result.new else DUPLICATE
                    if result.new and self.on_new is not None:
                        self.on_new()
                if commit is not None:
                    spans.finished(commit, outcome)
        except ReceiverError as exc:
            await self._reject(send, exc, event_type)
            if span is not None:
                spans.rejected(span, commit, exc)
            return
        metrics.delivered(event_type, outcome)
        # No line per delivery: the inbox logs one per group commit naming every event in it
        # (a line per request cost more than the HMAC and the parse together), the journal
        # one per fsync.
        status, answer = _ANSWERS[outcome]
        # A fresh list each time: ASGI middleware may append to a response's headers in place.
        await send({"type": "http.response.start", "status": status, "headers": answer.copy()})
        await send(_NO_BODY)
        metrics.ACK_SECONDS.observe(time.perf_counter() - started)
        if span is not None:
            spans.finished(span, outcome, status)

    async def _journal(self, record: Record, exc: StoreUnavailable) -> str:
        """The store could not commit `record`: the journal takes it (acknowledged, moved into
        the store later), or, if it cannot either, nothing was acknowledged (a 503, retried)."""
        self.store_failing = True
        if self.journal is None:
            log.warning("webhook.store_unavailable", error=str(exc))
            raise StoreDown("store_unavailable") from exc
        try:
            await self.journal.append(record)
        except JournalUnavailable as full:
            log.error("webhook.journal_unavailable", store_error=str(exc), reason=full.reason)
            raise StoreDown(full.reason) from full
        return JOURNALED

    async def _keep_unrecognised(self, item: Unrecognised) -> str:
        try:
            new = await self.inbox.keep_unrecognised(item)
        except StoreUnavailable as exc:
            return await self._journal(item, exc)
        self.store_failing = False
        # Rare, and worth a line each: the reason only, never the body.
        log.info("webhook.unrecognised", message_id=item.message_id, reason=item.reason, new=new)
        return UNRECOGNISED if new else DUPLICATE

    async def _reject(self, send: Send, exc: ReceiverError, event_type: str) -> None:
        status = exc.status_code
        metrics.REJECTIONS.labels(exc.reason, str(status)).inc()
        self.rejections.count(exc.reason, status)
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
