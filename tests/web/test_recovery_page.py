"""Recovery on the operator page and its API (console/recovery_api.py): Replay and Discard beside
each dead letter, Reroute unmatched; over real HTTP on loopback against a real store, behind the
token (bearer, or the page's cookie plus the CSRF header)."""

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from pydantic import SecretStr
from sqlalchemy.engine import Engine
from starlette.applications import Starlette

from console import auth
from console.recovery_api import recovery_routes
from console.web import web_routes
from handlers.config import RouteRule
from store.engine import make_engine
from store.runs import ROUTE_HANDLER, RunStore
from tests.handlers.helpers import add_delivery
from tests.support.servers import serve
from tests.web.stack import TOKEN, web_stack

LEASE = timedelta(seconds=30)
IDLED = "session.status_idled"
TERMINATED = "session.status_terminated"
ROUTES = [RouteRule(event_types=[IDLED], handlers=["log"])]


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:
    engine = make_engine(db_url, pool_size=4)
    yield engine
    engine.dispose()


@pytest.fixture
def http(engine: Engine) -> Iterator[httpx.Client]:
    token = SecretStr(TOKEN)
    app = Starlette(
        routes=[*web_routes(engine, token, routes=ROUTES), *recovery_routes(engine, token, ROUTES)]
    )
    with serve(app) as url, httpx.Client(base_url=url, timeout=30) as client:
        client.cookies.set(auth.COOKIE_NAME, auth.cookie_value(token))
        yield client


CSRF = {"x-idlehook-csrf": "1"}


def dead_letter(store: RunStore, engine: Engine, event_type: str, handler: str) -> int:
    """A delivery routed to `handler`, which died."""
    now = datetime.now(UTC)
    add_delivery(engine, event_type, f"sesn_{handler}", now=now)
    [route] = store.claim("w", now, LEASE)
    store.complete_route(route.id, "w", now, 1.0, [handler], attempt=1, decision="matched")
    [run] = store.claim("w", now, LEASE)
    store.fail(run.id, "w", now, "boom", None, 1.0, attempt=1)
    return run.id


def unmatched(store: RunStore, engine: Engine, event_type: str) -> int:
    now = datetime.now(UTC)
    delivery = add_delivery(engine, event_type, "sesn_unmatched", now=now)
    [route] = store.claim("w", now, LEASE)
    store.complete_route(route.id, "w", now, 1.0, [], attempt=1, decision="no_rule")
    return delivery


def test_the_page_offers_the_buttons_and_they_post_with_the_csrf_header(
    http: httpx.Client, engine: Engine
) -> None:
    store = RunStore(engine)
    typo = dead_letter(store, engine, IDLED, "logg")
    stale = dead_letter(store, engine, TERMINATED, "forward")
    delivery = unmatched(store, engine, IDLED)

    page = http.get("/").text
    for run_id in (typo, stale):
        assert f'data-replay="{run_id}"' in page
        assert f'data-discard="{run_id}"' in page
    assert "Deliveries no rule matched that a current route now wants: 1" in page
    assert "data-reroute-unmatched" in page
    assert '"/dead-letters/" + encodeURIComponent(button.dataset.replay)' in page

    # The cookie without the header (a foreign page could send that much) is refused.
    assert http.post(f"/dead-letters/{typo}/replay").status_code == 401
    replayed = http.post(f"/dead-letters/{typo}/replay", headers=CSRF)
    assert replayed.status_code == 200, replayed.text
    body = replayed.json()
    assert (body["replayed"], body["routes_now"]) == ([typo], ["log"])
    new_route = store.get(body["route_run_id"])
    assert (new_route.handler, new_route.state, new_route.generation) == (
        ROUTE_HANDLER,
        "pending",
        1,
    )
    assert store.get(typo).state == "superseded"
    assert http.post(f"/dead-letters/{typo}/replay", headers=CSRF).status_code == 404

    # No current route names a handler for a termination: said so, left dead.
    refused = http.post(f"/dead-letters/{stale}/replay", headers=CSRF)
    assert (refused.status_code, refused.json()["error"]) == (409, "no_route")
    assert store.get(stale).state == "dead"

    no_reason = http.post(f"/dead-letters/{stale}/discard", json={}, headers=CSRF)
    assert no_reason.status_code == 400
    assert "reason" in no_reason.json()["message"]
    discarded = http.post(
        f"/dead-letters/{stale}/discard", json={"reason": "endpoint retired"}, headers=CSRF
    )
    assert discarded.status_code == 200, discarded.text
    run = store.get(stale)
    assert (run.state, run.resolution, run.resolved_by) == ("discarded", "endpoint retired", "http")
    assert (
        http.post(
            f"/dead-letters/{stale}/discard", json={"reason": "again"}, headers=CSRF
        ).status_code
        == 404
    )

    dry = http.post("/reroute/unmatched", json={"dry_run": True}, headers=CSRF).json()
    assert (dry["would_reroute"], dry["deliveries"][0]["delivery_id"]) == (1, delivery)
    done = http.post("/reroute/unmatched", headers=CSRF).json()
    assert done["rerouted"] == 1
    assert [r.handler for r in store.runs_for_delivery(delivery)] == [ROUTE_HANDLER] * 2

    # Nothing left to act on: no dead letter, nothing unmatched wanted; no buttons, no script.
    after = http.get("/").text
    assert "data-replay" not in after
    assert "data-reroute-unmatched=" not in after
    assert "<script" not in after


def test_the_api_needs_the_token(http: httpx.Client) -> None:
    http.cookies.clear()
    for path in ("/dead-letters/1/replay", "/dead-letters/1/discard", "/reroute/unmatched"):
        assert http.post(path).status_code == 401
    bearer = {"authorization": f"Bearer {TOKEN}"}
    assert http.post("/dead-letters/1/replay", headers=bearer).status_code == 404
    assert http.post("/dead-letters/x/replay", headers=bearer).status_code == 404
    bad = http.post("/reroute/unmatched", json={"since": "1h"}, headers=bearer)
    assert (bad.status_code, bad.json()["message"]) == (400, "since: unknown field")


def test_the_service_mounts_the_recovery_api(sqlite_url: str, tmp_path: Path) -> None:
    with web_stack(sqlite_url, tmp_path) as s:
        answer = httpx.post(
            s.url + "/reroute/unmatched",
            headers={"authorization": f"Bearer {TOKEN}"},
            json={"dry_run": True},
            timeout=30,
        )
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"dry_run": True, "would_reroute": 0, "deliveries": []}
