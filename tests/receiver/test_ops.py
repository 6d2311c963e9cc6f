"""Health, readiness, metrics, and what the receiver does while its store is down."""

import asyncio
import contextlib
from collections.abc import AsyncIterator

import httpx
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from receiver.app import ReceiverApp, create_app
from receiver.config import ReceiverConfig
from store.inbox import Inbox
from tests.receiver.conftest import KEY_A, NOW, WEBHOOK, Receiver, event_body, signed_headers
from tests.receiver.outage import store_down
from tests.support.servers import serve


def test_healthz_and_readyz(receiver: Receiver) -> None:
    assert httpx.get(receiver.url + "/healthz").json() == {"status": "ok"}
    ready = httpx.get(receiver.url + "/readyz")
    assert (ready.status_code, ready.json()) == (200, {"status": "ready"})


def test_metrics_expose_the_counters_and_the_inbox_depth(receiver: Receiver) -> None:
    for n in range(3):
        body = event_body(f"wevt_m{n}")
        httpx.post(receiver.url + WEBHOOK, content=body, headers=signed_headers(body, f"wevt_m{n}"))
    httpx.post(receiver.url + WEBHOOK, content=b"{}", headers={})
    response = httpx.get(receiver.url + "/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    text = response.text
    for name in (
        'idlehook_webhook_deliveries_total{event_type="session.status_idled",outcome="stored"}',
        'idlehook_webhook_rejections_total{reason="missing_signature_headers",status="401"}',
        'idlehook_webhook_signature_failures_total{reason="missing_signature_headers"}',
        'idlehook_webhook_signing_key_matches_total{key_index="0"}',
        "idlehook_inbox_batch_size_bucket",
        "idlehook_webhook_ack_seconds_bucket",
    ):
        assert name in text, name
    assert "idlehook_inbox_depth 3.0" in text  # three routing runs waiting for the worker


async def _post_one(client: httpx.AsyncClient, event_id: str) -> httpx.Response:
    body = event_body(event_id)
    return await client.post(WEBHOOK, content=body, headers=signed_headers(body, event_id))


async def test_store_down_is_503_with_nothing_written_then_recovers(receiver: Receiver) -> None:
    url = str(receiver.inbox.engine.url.render_as_string(hide_password=False))
    async with httpx.AsyncClient(base_url=receiver.url, timeout=60) as client:
        assert (await _post_one(client, "wevt_before")).status_code == 204
        with store_down(url):
            # SQLite waits out its busy timeout first, so everything is asked at once.
            down = await asyncio.gather(
                *(_post_one(client, f"wevt_down_{i}") for i in range(3)),
                client.get("/readyz"),
                client.get("/metrics"),
                client.get("/healthz"),
            )
        *posts, ready, scraped, alive = down
        assert [(r.status_code, r.json()) for r in posts] == [
            (503, {"error": "store_unavailable"})
        ] * 3
        assert (ready.status_code, ready.json()) == (503, {"error": "store_unavailable"})
        assert scraped.status_code == 200  # a scrape survives; the depth gauge is left out
        assert alive.status_code == 200  # alive, just not ready: don't restart it
        # Anthropic retries the same events; the same app takes them now.
        assert (await client.get("/readyz")).status_code == 200
        retried = await asyncio.gather(*(_post_one(client, f"wevt_down_{i}") for i in range(3)))
        assert [r.headers["idlehook-outcome"] for r in retried] == ["stored"] * 3
    stored = [d.event_id for d in receiver.deliveries()]
    assert sorted(stored) == ["wevt_before", "wevt_down_0", "wevt_down_1", "wevt_down_2"]
    assert all(d.duplicates == 0 for d in receiver.deliveries())  # nothing half-written before
    assert len(receiver.runs()) == 4


def test_extra_routes_and_lifespan_compose(sqlite_url: str) -> None:
    events: list[str] = []

    async def hello(request: Request) -> Response:
        return PlainTextResponse("hi")

    async def shadow(request: Request) -> Response:
        return PlainTextResponse("router reached", status_code=500)

    @contextlib.asynccontextmanager
    async def extra(app: ReceiverApp) -> AsyncIterator[None]:
        events.append("start")
        yield
        events.append("stop")

    inbox = Inbox.connect(sqlite_url)
    app = create_app(
        ReceiverConfig.from_secrets([KEY_A]),
        inbox,
        now=lambda: NOW,
        routes=[Route("/hello", hello), Route(WEBHOOK, shadow, methods=["POST", "GET"])],
        lifespan=extra,
    )
    try:
        with serve(app) as url:
            assert httpx.get(url + "/hello").text == "hi"
            body = event_body("wevt_x")
            response = httpx.post(
                url + WEBHOOK, content=body, headers=signed_headers(body, "wevt_x")
            )
            # Dispatched before the router: the intake's answer, not the shadowing route's.
            assert (response.status_code, response.headers["idlehook-outcome"]) == (204, "stored")
            assert events == ["start"]
        assert events == ["start", "stop"]
    finally:
        inbox.close()
