"""The worker's spans without a stack: which parent each run's span takes."""

from datetime import UTC, datetime

from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from handlers.spans import RunSpans
from idlehook import tracing
from store.runs import ROUTE_HANDLER, DeliveryView

T0 = datetime(2026, 12, 1, tzinfo=UTC)
RECEIPT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


def view(delivery_id: int, traceparent: str | None, source: str = "webhook") -> DeliveryView:
    return DeliveryView(
        id=delivery_id,
        event_id=f"wevt_{delivery_id}",
        event_type="session.status_idled",
        resource_id="sesn_1",
        session_id="sesn_1",
        source=source,
        received_at=T0,
        event_created_at=T0,
        traceparent=traceparent,
    )


def test_routing_continues_the_receipt_and_handlers_follow_routing(
    exported: InMemorySpanExporter,
) -> None:
    spans = RunSpans()
    delivery = view(1, RECEIPT)
    with spans.run(ROUTE_HANDLER, delivery, 1):
        pass
    with spans.run("archive", delivery, 1):
        pass
    assert tracing.flush()
    route, archive = exported.get_finished_spans()
    assert route.name == "delivery.route"
    assert route.parent is not None
    assert route.parent.is_remote
    assert f"{route.context.trace_id:032x}" == RECEIPT.split("-")[1]
    assert f"{route.parent.span_id:016x}" == RECEIPT.split("-")[2]
    assert archive.name == "handler.run"
    assert archive.parent is not None
    assert archive.parent.span_id == route.context.span_id
    assert dict(archive.attributes or {}) == {
        "idlehook.event_id": "wevt_1",
        "idlehook.session_id": "sesn_1",
        "idlehook.event_type": "session.status_idled",
        "idlehook.delivery_id": 1,
        "idlehook.attempt": 1,
        "idlehook.handler": "archive",
    }


def test_a_delivery_without_a_receipt_starts_a_trace_and_a_stranger_run_joins_the_receipt(
    exported: InMemorySpanExporter,
) -> None:
    spans = RunSpans()
    # The reconciler's delivery: no traceparent; a trace of its own, still named.
    with spans.run(ROUTE_HANDLER, view(2, None, source="reconcile"), 1):
        pass
    # A handler run this worker did not route (another worker did, or before a restart): under
    # the receipt, in its trace.
    with spans.run("log", view(3, RECEIPT), 2):
        pass
    assert tracing.flush()
    route, log = exported.get_finished_spans()
    assert route.parent is None
    assert (route.attributes or {})["idlehook.event_id"] == "wevt_2"
    assert (route.attributes or {})["idlehook.session_id"] == "sesn_1"
    assert log.parent is not None
    assert f"{log.parent.span_id:016x}" == RECEIPT.split("-")[2]
    assert f"{log.context.trace_id:032x}" == RECEIPT.split("-")[1]


def test_a_failed_run_exports_the_masked_error_not_the_exception(
    exported: InMemorySpanExporter,
) -> None:
    spans = RunSpans()
    secret = "Bearer plugin-token-0042"
    try:
        with spans.run("forward", view(4, RECEIPT), 1):
            raise RuntimeError(f"target refused {secret}")
    except RuntimeError:
        pass
    assert tracing.flush()
    [run] = exported.get_finished_spans()
    assert run.status.status_code.name == "ERROR"
    assert run.status.description is not None
    assert run.status.description.startswith("RuntimeError: target refused ")
    assert (run.attributes or {})["error.type"] == "RuntimeError"
    assert not run.events  # no exception event with its text and traceback
    assert "plugin-token-0042" not in str(run.status.description)
