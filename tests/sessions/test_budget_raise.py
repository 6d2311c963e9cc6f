"""Raising a spend ceiling through the Python API and `POST /sessions/{id}/budget`, against the
emulator over loopback with the real SDK: the raise resumes a session paused on its cap, and
every refusal is explained without an update call."""

import json
import time
from collections.abc import Iterator
from typing import Any

import anthropic
import httpx
import httpx2  # the SDK's own httpx
import pytest
from pydantic import SecretStr
from starlette.applications import Starlette

from console.budget_api import budget_routes
from sessions.budget import BudgetNotFound, BudgetRefused, InvalidBudget
from sessions.launcher import Launcher, LaunchRequest
from store.engine import make_engine
from store.sessions import SessionStore
from tests.sessions.test_launch_helpers import API_KEY, World, launcher_for, world
from tests.support.servers import serve

TOKEN = "budget-token-for-tests"
AUTH = {"authorization": f"Bearer {TOKEN}"}
UPDATE = "POST /v1/sessions/{id}"


@pytest.fixture
def w() -> Iterator[World]:
    # Emulated turns of a second at speed 50: a scripted session idles within moments.
    with world(run_seconds=1.0, speed=50.0) as running:
        yield running


async def launch(launcher: Launcher, w: World, script: str, **fields: Any) -> str:
    result = await launcher.start(
        LaunchRequest(
            agent=w.agent_id,
            environment=w.limited_env,
            message="work",
            metadata={"emulator_script": script},
            **fields,
        )
    )
    assert result.session_id is not None
    return result.session_id


def wait_idle(w: World, session_id: str) -> Any:
    api = w.sync_client()
    deadline = time.monotonic() + 15
    while (session := api.beta.sessions.retrieve(session_id)).status != "idle":
        assert time.monotonic() < deadline, f"{session_id} never idled"
        time.sleep(0.02)
    return session


def stop_reason(w: World, session_id: str) -> str:
    page = w.sync_client().beta.sessions.events.list(
        session_id, types=["session.status_idle"], order="desc", limit=1
    )
    return str(page.data[0].stop_reason.type)  # type: ignore[union-attr]


async def test_a_raise_lifts_the_cap_and_the_api_resumes_the_session(
    w: World, sqlite_url: str
) -> None:
    with launcher_for(w, sqlite_url) as launcher:
        session_id = await launch(launcher, w, "budget_reached", budget_usd=5)
        paused = wait_idle(w, session_id)
        assert stop_reason(w, session_id) == "budget_reached"
        spent = int(paused.usage.list_cost.amount)
        reads = w.emu.requests["GET /v1/sessions/{id}"]

        raised = await launcher.raise_budget(session_id, 12.5)

        assert (raised.cap_usd, raised.previous_cap_usd) == (12.5, 5.0)
        assert raised.spent_usd == spent / 100
        assert raised.to_json()["session_id"] == session_id
        assert w.emu.requests["GET /v1/sessions/{id}"] == reads + 1  # one read to check
        assert w.emu.requests[UPDATE] == 1  # one update to raise
        session = w.sync_client().beta.sessions.retrieve(session_id)
        assert session.budget is not None
        assert session.budget.max_list_cost.amount == "1250"
        assert session.metadata["idlehook_budget_usd"] == "12.50"
        # The API resumed it by itself, and the turn ran to its end.
        wait_idle(w, session_id)
        assert stop_reason(w, session_id) == "end_turn"
        tracked = SessionStore(launcher.store.engine).get(session_id)
        assert tracked is not None
        assert tracked.session_metadata["idlehook_budget_usd"] == "12.50"


async def test_each_refusal_is_clear_and_makes_no_update_call(w: World, sqlite_url: str) -> None:
    with launcher_for(w, sqlite_url) as launcher:
        capped = await launch(launcher, w, "end_turn", budget_usd=5)
        uncapped = await launch(launcher, w, "end_turn")
        wait_idle(w, capped)
        wait_idle(w, uncapped)

        async def refused(session_id: str, usd: float) -> BudgetRefused:
            with pytest.raises(BudgetRefused) as caught:
                await launcher.raise_budget(session_id, usd)
            return caught.value

        no_budget = await refused(uncapped, 10)
        assert no_budget.reason == "budget_create_only"
        assert "budgets can only be raised on sessions created with one" in str(no_budget)

        lower = await refused(capped, 4)
        assert lower.reason == "budget_not_raised"
        assert "the new cap $4.00 is not above the current cap $5.00" in str(lower)
        assert (await refused(capped, 5)).reason == "budget_not_raised"

        # More spent than the cap (a cap fires at or after the request that crosses it).
        w.emu.store.sessions[capped].usage["list_cost"]["amount"] = "800"
        overspent = await refused(capped, 7)
        assert overspent.reason == "budget_not_raised"
        assert "not above what session" in str(overspent)
        assert "already spent ($8.00)" in str(overspent)

        w.sync_client().beta.sessions.archive(capped)
        terminated = await refused(capped, 50)
        assert terminated.reason == "session_terminated"
        assert "can no longer change" in str(terminated)

        with pytest.raises(BudgetNotFound, match="unknown session sesn_nope"):
            await launcher.raise_budget("sesn_nope", 10)
        reads = w.emu.requests["GET /v1/sessions/{id}"]
        with pytest.raises(InvalidBudget, match="not a positive amount"):
            await launcher.raise_budget(capped, -1)
        assert w.emu.requests["GET /v1/sessions/{id}"] == reads  # bad input: not even a read

        assert w.emu.requests[UPDATE] == 0


class RefuseUpdate(httpx2.AsyncBaseTransport):
    """The API, refusing the raise itself (another raise won a race, say)."""

    def __init__(self) -> None:
        self.inner = httpx2.AsyncHTTPTransport()
        self.refused = 0

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        if request.method == "POST" and request.url.path.startswith("/v1/sessions/sesn_"):
            self.refused += 1
            body = {
                "type": "error",
                "error": {
                    "type": "invalid_request_error",
                    "message": "budget: the cap must exceed what is already spent",
                    "details": {"error_code": "budget_not_raised"},
                },
            }
            return httpx2.Response(400, content=json.dumps(body).encode(), request=request)
        return await self.inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self.inner.aclose()


async def test_the_apis_own_refusal_reads_the_same(w: World, sqlite_url: str) -> None:
    with launcher_for(w, sqlite_url) as plain:
        session_id = await launch(plain, w, "end_turn", budget_usd=5)
    transport = RefuseUpdate()
    client = anthropic.AsyncAnthropic(
        api_key=API_KEY,
        base_url=w.url,
        max_retries=0,
        http_client=httpx2.AsyncClient(transport=transport),
    )
    engine = make_engine(sqlite_url, pool_size=2)
    try:
        launcher = Launcher(engine, client, owner="t")
        with pytest.raises(BudgetRefused) as caught:
            await launcher.raise_budget(session_id, 10)
    finally:
        engine.dispose()
    assert caught.value.reason == "budget_not_raised"
    assert "the new cap must be above what the session has already spent" in str(caught.value)
    assert transport.refused == 1


# -- HTTP --------------------------------------------------------------------------------------


def create(w: World, script: str, usd: float | None = None) -> str:
    """A session made directly through the SDK: the server's launcher owns its own event loop."""
    extra: dict[str, Any] = {}
    if usd is not None:
        cents = str(round(usd * 100))
        extra["budget"] = {"type": "limit", "max_list_cost": {"amount": cents, "currency": "USD"}}
    session = w.sync_client().beta.sessions.create(
        agent=w.agent_id,
        environment_id=w.limited_env,
        metadata={"emulator_script": script},
        initial_events=[{"type": "user.message", "content": [{"type": "text", "text": "go"}]}],
        **extra,
    )
    return session.id


@pytest.fixture
def api(w: World, sqlite_url: str) -> Iterator[tuple[World, str]]:
    with launcher_for(w, sqlite_url, owner="api") as launcher:
        app = Starlette(routes=budget_routes(launcher, SecretStr(TOKEN)))
        with serve(app) as url:
            yield w, url


def test_http_raise_answers_the_new_budget(api: tuple[World, str]) -> None:
    w, url = api
    session_id = create(w, "budget_reached", usd=5)
    wait_idle(w, session_id)
    response = httpx.post(f"{url}/sessions/{session_id}/budget", json={"usd": 12.5}, headers=AUTH)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["session_id"] == session_id
    assert (body["cap_usd"], body["previous_cap_usd"]) == (12.5, 5.0)
    session = w.sync_client().beta.sessions.retrieve(session_id)
    assert session.budget is not None
    assert session.budget.max_list_cost.amount == "1250"
    assert w.emu.requests[UPDATE] == 1


@pytest.mark.parametrize(
    ("raw", "status", "error", "text"),
    [
        (b"not json", 400, "invalid_request", "not valid JSON"),
        (b"[12]", 400, "invalid_request", "body must be a JSON object"),
        (b"{}", 400, "invalid_request", "usd: required"),
        (b'{"usd": "12"}', 400, "invalid_request", "usd: expected a number of US dollars"),
        (b'{"usd": -3}', 400, "invalid_request", "usd: -3 is not a positive amount"),
        (b'{"usd": 1e9}', 400, "invalid_request", "the most idlehook accepts"),
        (b'{"usd": 12, "cap": 3}', 400, "invalid_request", "cap: unknown field"),
        (b'{"usd": 4}', 409, "budget_not_raised", "not above the current cap $5.00"),
    ],
)
def test_http_bad_input_and_refusals_are_clear(
    api: tuple[World, str], raw: bytes, status: int, error: str, text: str
) -> None:
    w, url = api
    session_id = create(w, "end_turn", usd=5)
    response = httpx.post(f"{url}/sessions/{session_id}/budget", content=raw, headers=AUTH)
    assert response.status_code == status
    assert response.json()["error"] == error
    assert text in response.json()["message"]
    assert w.emu.requests[UPDATE] == 0


def test_http_unknown_session_no_budget_and_no_token(api: tuple[World, str]) -> None:
    w, url = api
    uncapped = create(w, "end_turn")
    missing = httpx.post(f"{url}/sessions/sesn_nope/budget", json={"usd": 5}, headers=AUTH)
    assert missing.status_code == 404
    assert missing.json()["message"] == "unknown session sesn_nope"
    create_only = httpx.post(f"{url}/sessions/{uncapped}/budget", json={"usd": 5}, headers=AUTH)
    assert create_only.status_code == 409
    assert create_only.json()["error"] == "budget_create_only"
    for headers in ({}, {"authorization": "Bearer wrong"}):
        denied = httpx.post(f"{url}/sessions/{uncapped}/budget", json={"usd": 5}, headers=headers)
        assert denied.status_code == 401
    assert w.emu.requests[UPDATE] == 0
