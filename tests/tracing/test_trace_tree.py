"""One session, one span tree per delivery: the webhook's receipt and commit in the receiver,
its routing and handler runs in the worker, the API calls beneath, linked by the `traceparent`
kept with the delivery in the store (not by anything in memory the two share).

The whole service on loopback: the emulator, the receiver over real HTTP, its worker, SQLite.
"""

import base64
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from handlers.config import RouteRule, WorkerSettings
from idlehook import tracing
from idlehook.settings import Settings, TracingSettings
from store.models import TRACEPARENT, Delivery, HandlerRun, RunState
from tests.support.servers import wait_for
from tests.support.stack import Running, emulator_and_service
from tests.tracing.conftest import ON

pytestmark = pytest.mark.slow

SECRET = "whsec_" + base64.b64encode(b"T" * 32).decode()
TOKEN = "tracing-token-0123456789"
API_KEY = "sk-ant-api03-tracing-test-key-never-in-a-span"
HANDLERS = ("archive", "log", "delete")
IDLEHOOK_SPANS = {"webhook.receive", "webhook.commit", "delivery.route", "handler.run"}
EVENT_ID, SESSION_ID = "idlehook.event_id", "idlehook.session_id"


def stack(db_url: str, tmp_path: Path, tracing_on: bool) -> Any:
    return emulator_and_service(
        db_url,
        tmp_path,
        secret=SECRET,
        token=TOKEN,
        owner="tracing",
        api_key=API_KEY,
        tracing=ON if tracing_on else TracingSettings(),
        # `delete` last, and reading the session afresh (no reuse of routing's reads): its run
        # makes API calls of its own (the session, its events, the delete).
        routes=[
            RouteRule(
                name="finished",
                event_types=["session.status_idled"],
                handlers=list(HANDLERS),
            )
        ],
        worker=WorkerSettings(poll_seconds=0.1, backoff_base_seconds=0.1, reuse_reads_seconds=0),
    )


def idle_session(s: Running) -> tuple[str, dict[str, Any]]:
    """Launch a session that ends its turn; wait for its idle delivery's handlers: the session
    id and that delivery's row."""
    agent, env = s.agent_and_environment("traced")
    sid = s.start_session(agent, env, "trace me", {"emulator_script": "end_turn"})
    deliveries = Delivery.__table__  # type: ignore[attr-defined]
    runs = HandlerRun.__table__  # type: ignore[attr-defined]

    def idled() -> Any:
        with s.svc.engine.connect() as conn:
            row = conn.execute(
                sa.select(deliveries).where(
                    deliveries.c.session_id == sid,
                    deliveries.c.event_type == "session.status_idled",
                )
            ).first()
            if row is None:
                return None
            done = conn.execute(
                sa.select(runs.c.handler).where(
                    runs.c.delivery_id == row.id, runs.c.state == RunState.SUCCEEDED.value
                )
            ).all()
        return row if set(HANDLERS) <= {h for (h,) in done} else None

    return sid, dict(wait_for(idled, timeout=30)._mapping)


def hex_id(value: int, width: int = 16) -> str:
    return f"{value:0{width}x}"


def descendants(root: ReadableSpan, spans: list[ReadableSpan]) -> list[ReadableSpan]:
    below: list[ReadableSpan] = []
    frontier = [root.context.span_id]
    while frontier:
        parent = frontier.pop()
        for span in spans:
            if span.parent is not None and span.parent.span_id == parent:
                below.append(span)
                frontier.append(span.context.span_id)
    return below


def test_one_delivery_is_one_span_tree_from_receipt_to_api_calls(
    sqlite_url: str, tmp_path: Path, exported: InMemorySpanExporter
) -> None:
    with stack(sqlite_url, tmp_path, tracing_on=True) as s:
        sid, delivery = idle_session(s)
    assert tracing.flush()
    spans = list(exported.get_finished_spans())
    event_id = delivery["event_id"]

    [receive] = [
        x
        for x in spans
        if x.name == "webhook.receive" and (x.attributes or {}).get(EVENT_ID) == event_id
    ]
    assert receive.parent is None  # the root
    assert receive.kind is trace.SpanKind.SERVER
    trace_id = receive.context.trace_id
    tree = [x for x in spans if x.context.trace_id == trace_id]
    # The stored trace context is the receipt's: how the worker found this trace.
    stored = delivery["headers"][TRACEPARENT]
    assert stored.startswith(f"00-{hex_id(trace_id, 32)}-{hex_id(receive.context.span_id)}-")
    assert int(stored[-2:], 16) & 1  # sampled

    def children(parent: ReadableSpan, name: str) -> list[ReadableSpan]:
        return [
            x
            for x in tree
            if x.name == name
            and x.parent is not None
            and x.parent.span_id == parent.context.span_id
        ]

    [commit] = children(receive, "webhook.commit")
    assert (commit.attributes or {})["idlehook.outcome"] == "stored"
    [route] = children(receive, "delivery.route")
    handler_runs = children(route, "handler.run")
    assert sorted(str((x.attributes or {})["idlehook.handler"]) for x in handler_runs) == sorted(
        HANDLERS
    )
    # Nothing of this delivery's is outside the tree, nor in another trace.
    mine = [x for x in spans if (x.attributes or {}).get(EVENT_ID) == event_id]
    assert {x.context.trace_id for x in mine} == {trace_id}
    assert {x.name for x in mine} == IDLEHOOK_SPANS

    # The API calls: the SDK's span per call, the paced transport's per HTTP request beneath.
    below_route = descendants(route, tree)
    urls = [str((x.attributes or {}).get("url.full", "")) for x in below_route]
    assert any(u.endswith(f"/v1/sessions/{sid}") for u in urls), urls
    assert any(u.endswith(f"/v1/sessions/{sid}/events") for u in urls), urls
    requests = [x for x in below_route if x.kind is trace.SpanKind.CLIENT and x.name == "GET"]
    assert requests
    # Each request names the session it is about, so any process's calls for it can be found.
    assert {(x.attributes or {}).get(SESSION_ID) for x in requests} == {sid}
    # Each under its SDK call span, not directly under routing.
    assert all(x.parent is not None and x.parent.span_id != route.context.span_id for x in requests)
    assert {x.name for x in below_route} >= {
        "anthropic.sessions.retrieve",
        "anthropic.sessions.events.list",
    }
    [delete] = [x for x in handler_runs if (x.attributes or {})["idlehook.handler"] == "delete"]
    below_delete = descendants(delete, tree)
    calls = {
        (x.name, str((x.attributes or {}).get("url.full", "")).split("/v1/", 1)[-1])
        for x in below_delete
        if x.kind is trace.SpanKind.CLIENT and x.name in {"GET", "DELETE"}
    }
    assert calls >= {
        ("GET", f"sessions/{sid}"),
        ("GET", f"sessions/{sid}/events"),
        ("DELETE", f"sessions/{sid}"),
    }, calls

    # The launch that made the session: its span names the session, the create call beneath.
    [launch] = [
        x
        for x in spans
        if x.name == "session.launch" and (x.attributes or {}).get(SESSION_ID) == sid
    ]
    creates = [
        x
        for x in descendants(launch, spans)
        if x.kind is trace.SpanKind.CLIENT
        and x.name == "POST"
        and str((x.attributes or {}).get("url.full", "")).endswith("/v1/sessions")
    ]
    assert len(creates) == 1, [x.name for x in descendants(launch, spans)]

    # Every idlehook span names the event and the session.
    for x in tree:
        if x.name in IDLEHOOK_SPANS:
            assert (x.attributes or {})[EVENT_ID] == event_id, x.name
            assert (x.attributes or {})[SESSION_ID] == sid, x.name

    # No span carries the API key, or any header of a request.
    for x in spans:
        values = [*(x.attributes or {}).items()]
        values += [item for e in x.events for item in (e.attributes or {}).items()]
        for key, value in values:
            assert API_KEY not in str(value), (x.name, key)
            assert "api-key" not in key, (x.name, key)
            assert "authorization" not in key, (x.name, key)


def test_with_tracing_off_nothing_is_recorded_and_no_traceparent_stored(
    sqlite_url: str, tmp_path: Path
) -> None:
    exporter = InMemorySpanExporter()
    # Off: configure installs nothing, even given an exporter.
    assert not tracing.configure(Settings(), role="stack", exporter=exporter)
    with stack(sqlite_url, tmp_path, tracing_on=False) as s:
        assert s.svc.app.intake.tracer is None  # the webhook path makes no span at all
        _, delivery = idle_session(s)
    assert TRACEPARENT not in delivery["headers"]
    assert set(delivery["headers"]) <= {
        "webhook-id",
        "webhook-timestamp",
        "user-agent",
        "content-type",
    }
    assert exporter.get_finished_spans() == ()
    # No provider: OpenTelemetry's own no-op one answers, and its spans record nothing.
    assert not trace.get_tracer("idlehook").start_span("x").is_recording()


@pytest.fixture(autouse=True)
def _nothing_left_installed() -> Iterator[None]:
    yield
    assert tracing.flush()
