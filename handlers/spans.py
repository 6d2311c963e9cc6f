"""The worker's spans: `delivery.route` for a routing run, `handler.run` for a plugin run.

A routing run continues the trace its webhook's receipt began in the receiver: the receipt's
W3C `traceparent` is kept with the delivery (`DeliveryView.traceparent`). A delivery without
one (tracing was off at receipt, or the reconciler made it) starts a trace of its own here.
A handler run is a child of its delivery's routing span when this worker routed it (recently:
the span contexts are kept as the delivery reads are, a few and briefly), else of the receipt.
Every span names the event and the session, so a session's runs are found across traces too.

Only `opentelemetry-api`: with no provider installed (`[tracing]` off) the spans record nothing.
"""

import collections
import contextlib
from collections.abc import Iterator

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from handlers.redact import describe_error
from store.runs import ROUTE_HANDLER, DeliveryView

SCOPE = "idlehook"
EVENT_ID = "idlehook.event_id"
SESSION_ID = "idlehook.session_id"
EVENT_TYPE = "idlehook.event_type"
HANDLER = "idlehook.handler"
DELIVERY_ID = "idlehook.delivery_id"
ATTEMPT = "idlehook.attempt"
ROUTE_SPAN = "delivery.route"
HANDLER_SPAN = "handler.run"

_propagator = TraceContextTextMapPropagator()


def receipt_context(traceparent: str | None) -> Context:
    """The receipt's span as a remote parent; an empty context (a new trace) without one."""
    if not traceparent:
        return Context()
    return _propagator.extract({"traceparent": traceparent}, context=Context())


class RunSpans:
    """Makes each run's span and keeps the latest routing spans' contexts, `kept` at most."""

    def __init__(self, kept: int = 64) -> None:
        self.kept = kept
        self._routes: collections.OrderedDict[int, Context] = collections.OrderedDict()

    @contextlib.contextmanager
    def run(self, handler: str, delivery: DeliveryView, attempt: int) -> Iterator[trace.Span]:
        """The run's span, current while the run is: the SDK's call spans nest under it."""
        routing = handler == ROUTE_HANDLER
        parent = None if routing else self._routes.get(delivery.id)
        attributes: dict[str, str | int] = {
            EVENT_ID: delivery.event_id,
            EVENT_TYPE: delivery.event_type,
            DELIVERY_ID: delivery.id,
            ATTEMPT: attempt,
        }
        if delivery.session_id is not None:
            attributes[SESSION_ID] = delivery.session_id
        if not routing:
            attributes[HANDLER] = handler
        tracer = trace.get_tracer(SCOPE)
        with tracer.start_as_current_span(
            ROUTE_SPAN if routing else HANDLER_SPAN,
            context=parent if parent is not None else receipt_context(delivery.traceparent),
            attributes=attributes,
            # Not OpenTelemetry's own: it exports str(exc) and the traceback unmasked, and a
            # plugin's error may hold a token or a broker URL. The worker's masked text instead.
            record_exception=False,
            set_status_on_exception=False,
        ) as span:
            if routing and span.get_span_context().is_valid:
                self._keep(delivery.id, trace.set_span_in_context(span, Context()))
            try:
                yield span
            except BaseException as exc:
                if span.is_recording():
                    span.set_status(trace.StatusCode.ERROR, describe_error(exc))
                    span.set_attribute("error.type", type(exc).__name__)
                raise

    def _keep(self, delivery_id: int, context: Context) -> None:
        self._routes.pop(delivery_id, None)
        self._routes[delivery_id] = context
        while len(self._routes) > self.kept:
            self._routes.popitem(last=False)
