"""The webhook path's spans (`[tracing]` on): `webhook.receive` and, beneath it, `webhook.commit`.

The intake calls these only when it holds a tracer, so with tracing off the path pays a None
check per step and imports nothing of OpenTelemetry's SDK. The receipt's W3C `traceparent` goes
into the delivery's kept headers (store.models.TRACEPARENT): the worker that routes the delivery
later, in another process, continues the same trace (handlers/spans.py).

Attributes name the event, its type and the session; never a header value, key or body.
"""

from opentelemetry.trace import Span, SpanKind, Status, StatusCode, Tracer, set_span_in_context

from receiver.config import WEBHOOK_PATH
from receiver.errors import ReceiverError
from store.models import TRACEPARENT

RECEIVE_SPAN = "webhook.receive"
COMMIT_SPAN = "webhook.commit"
EVENT_ID = "idlehook.event_id"
SESSION_ID = "idlehook.session_id"
EVENT_TYPE = "idlehook.event_type"
OUTCOME = "idlehook.outcome"

_REQUEST = {"http.request.method": "POST", "http.route": WEBHOOK_PATH, "url.path": WEBHOOK_PATH}


def receive(tracer: Tracer) -> Span:
    """The root span of one webhook request (a server span, not made current: nothing else in
    the receiver makes spans but `commit`, which is given it)."""
    return tracer.start_span(RECEIVE_SPAN, kind=SpanKind.SERVER, attributes=_REQUEST)


def identified(
    span: Span,
    event_id: str,
    event_type: str,
    session_id: str | None,
    kept: dict[str, str] | None,
) -> None:
    """The verified event's names on the span, and its trace context into `kept` (the
    delivery's stored headers, a fresh dict per request; None: nothing is routed from it)."""
    span.set_attribute(EVENT_ID, event_id)
    span.set_attribute(EVENT_TYPE, event_type)
    if session_id is not None:
        span.set_attribute(SESSION_ID, session_id)
    context = span.get_span_context()
    if kept is not None and context.is_valid:
        kept[TRACEPARENT] = (
            f"00-{context.trace_id:032x}-{context.span_id:016x}-{context.trace_flags:02x}"
        )


def commit(tracer: Tracer, parent: Span, event_id: str, session_id: str | None) -> Span:
    """The wait for the delivery's durable write: the writer process's group commit, or the
    local journal's fdatasync when the store cannot take it."""
    attributes = {EVENT_ID: event_id}
    if session_id is not None:
        attributes[SESSION_ID] = session_id
    return tracer.start_span(
        COMMIT_SPAN, context=set_span_in_context(parent), attributes=attributes
    )


def store_failed(span: Span, exc: BaseException) -> None:
    # The class and reason only (store.ingest._reason): a driver message may hold a URL.
    span.add_event("store_unavailable", {"reason": str(exc), "error.type": type(exc).__name__})


def finished(span: Span | None, outcome: str, status: int | None = None) -> None:
    if span is None:
        return
    span.set_attribute(OUTCOME, outcome)
    if status is not None:
        span.set_attribute("http.response.status_code", status)
    span.end()


def rejected(span: Span, commit_span: Span | None, exc: ReceiverError) -> None:
    """A refused request (4xx, or a 503 when neither the store nor the journal took it)."""
    if commit_span is not None:
        commit_span.set_status(Status(StatusCode.ERROR, exc.reason))
        finished(commit_span, "failed")
    span.set_attribute("error.type", exc.reason)
    if exc.status_code >= 500:  # a client's 4xx is no error of the server's (semconv)
        span.set_status(Status(StatusCode.ERROR, exc.reason))
    finished(span, "rejected", exc.status_code)
