"""Budgeted launches against the emulator over loopback with the real SDK: the cap rides in the
one create call, and an agent whose models cannot be budgeted is refused before it."""

import asyncio
import json
from typing import Any

import anthropic
import httpx2 as httpx  # the SDK drives its own fork of httpx
import pytest

from sessions.launch_queue import LaunchDrainer
from sessions.launcher import Launcher, LaunchRejected, LaunchRequest
from store.engine import make_engine
from store.models import Launch, TrackedSession
from tests.sessions.test_launch_helpers import API_KEY, World, launcher_for, world
from tests.sessions.test_launcher import rows

UNPRICED = "custom-model"


def request(w: World, agent: str | None = None, **fields: Any) -> LaunchRequest:
    return LaunchRequest(
        agent=agent or w.agent_id, environment=w.limited_env, message="hi", **fields
    )


def sent_budget(w: World, session_id: str) -> dict[str, Any] | None:
    """The session's budget as the emulator answers GET /v1/sessions/{id}: raw JSON."""
    response = httpx.get(
        f"{w.url}/v1/sessions/{session_id}",
        headers={"x-api-key": API_KEY, "anthropic-beta": "managed-agents-2026-04-01"},
    )
    response.raise_for_status()
    value: dict[str, Any] | None = response.json()["budget"]
    return value


async def test_a_budgeted_launch_carries_the_cap_in_the_one_create(db_url: str) -> None:
    with world() as w, launcher_for(w, db_url) as launcher:
        result = await launcher.start(request(w, budget_usd=12.345))
        assert result.state == "created"
        assert result.budget_usd == 12.35
        assert result.to_json()["budget_usd"] == 12.35
        assert result.session_id is not None
        assert w.emu.requests["POST /v1/sessions"] == 1
        assert sent_budget(w, result.session_id) == {
            "type": "limit",
            "max_list_cost": {"amount": "1235", "currency": "USD"},
        }
        session = w.sync_client().beta.sessions.retrieve(result.session_id)
        assert session.budget is not None
        assert session.budget.max_list_cost.amount == "1235"
        assert session.metadata["idlehook_budget_usd"] == "12.35"
        # The agent was read once, to pin its version; that read also served the model check.
        assert w.emu.requests["GET /v1/agents/{id}"] == 1

        plain = await launcher.start(request(w))
        assert plain.budget_usd is None
        assert plain.session_id is not None
        assert sent_budget(w, plain.session_id) is None
    tracked = {t.id: t for t in rows(db_url, TrackedSession)}
    assert tracked[result.session_id].session_metadata["idlehook_budget_usd"] == "12.35"


async def test_the_setting_is_the_default_and_a_queued_launch_keeps_it(sqlite_url: str) -> None:
    with world() as w:
        with launcher_for(w, sqlite_url, budget_usd=4.0) as launcher:
            queued = await launcher.enqueue_many([request(w), request(w, budget_usd=9)])
            assert [q.budget_usd for q in queued] == [4.0, 9.0]
            assert w.session_creates() == 0
        # Another process, configured without a budget, drains the queue: the caps were fixed
        # when the launches were queued.
        with launcher_for(w, sqlite_url) as other:
            drainer = LaunchDrainer(other, concurrency=2, poll_seconds=0.05)
            await asyncio.wait_for(drainer.run(drain=True), 30)
        caps = sorted(
            (sent_budget(w, launch.session_id) or {})["max_list_cost"]["amount"]
            for launch in rows(sqlite_url, Launch)
            if launch.session_id is not None
        )
    assert caps == ["400", "900"]


async def test_an_unpriced_model_is_refused_before_any_create(sqlite_url: str) -> None:
    with world() as w, launcher_for(w, sqlite_url) as launcher:
        custom = w.sync_client().beta.agents.create(name="custom", model=UNPRICED)
        with pytest.raises(LaunchRejected) as caught:
            await launcher.start(request(w, custom.id, budget_usd=5))
        assert str(caught.value) == (
            f"agent {custom.id} runs model {UNPRICED}, which has no public list price, so the "
            "API cannot enforce a budget on it (model_not_budgetable); launch without --budget "
            "or add it to [launch] priced_models"
        )
        assert w.emu.requests["POST /v1/sessions"] == 0
        assert w.session_creates() == 0
        [launch] = rows(sqlite_url, Launch)
        assert launch.state == "failed"
        assert launch.attempts == 0  # refused, not retried
        # Without a budget the same agent launches: nothing to enforce.
        assert (await launcher.start(request(w, custom.id))).state == "created"


async def test_when_our_list_is_wrong_the_apis_refusal_fails_the_launch(sqlite_url: str) -> None:
    # `custom-*` listed as priced: the local check passes, and the emulator, which knows its
    # list prices, refuses the create itself with `model_not_budgetable`.
    with world() as w, launcher_for(w, sqlite_url, priced_models=["custom-*"]) as launcher:
        custom = w.sync_client().beta.agents.create(name="custom", model=UNPRICED)
        with pytest.raises(LaunchRejected) as caught:
            await launcher.start(request(w, custom.id, budget_usd=5))
        assert "no public list price" in str(caught.value)
        assert "(model_not_budgetable; the API said: " in str(caught.value)
        assert w.emu.requests["POST /v1/sessions"] == 1  # asked once, not retried
        assert w.session_creates() == 0


async def test_a_callable_agent_with_an_unpriced_model_is_refused_too(sqlite_url: str) -> None:
    with world() as w, launcher_for(w, sqlite_url) as launcher:
        api = w.sync_client()
        helper = api.beta.agents.create(name="helper", model=UNPRICED)
        roster = {
            "type": "coordinator",
            "agents": [{"type": "agent", "id": helper.id, "version": 1}],
        }
        lead = api.beta.agents.create(
            name="lead",
            model="claude-sonnet-4-6",
            extra_body={"multiagent": roster},
        )
        with pytest.raises(LaunchRejected) as caught:
            await launcher.start(request(w, lead.id, budget_usd=5))
        assert f"agent {lead.id} can call agent {helper.id}:1, which runs model {UNPRICED}" in (
            str(caught.value)
        )
        assert w.emu.requests["POST /v1/sessions"] == 0
        assert w.emu.requests["GET /v1/agents/{id}"] == 2  # the lead, then its helper


async def test_an_explicit_version_is_checked_at_that_version(sqlite_url: str) -> None:
    with world() as w, launcher_for(w, sqlite_url) as launcher:
        api = w.sync_client()
        api.beta.agents.update(w.agent_id, version=1, model=UNPRICED)  # version 2: unpriced
        ok = await launcher.start(request(w, f"{w.agent_id}:1", budget_usd=1))
        assert ok.state == "created"
        with pytest.raises(LaunchRejected, match=f"runs model {UNPRICED}"):
            await launcher.start(request(w, f"{w.agent_id}:2", budget_usd=1))
        with pytest.raises(LaunchRejected, match=f"runs model {UNPRICED}"):
            await launcher.start(request(w, budget_usd=1))  # the latest is version 2
        assert w.session_creates() == 1
        # Versions never change: read once each, then cached.
        again = await launcher.start(request(w, f"{w.agent_id}:1", budget_usd=2))
        assert again.state == "created"
        assert w.emu.requests["GET /v1/agents/{id}"] == 3


class RefuseCreate(httpx.AsyncBaseTransport):
    """The API, refusing a budget itself: the session create answers 400 with `error_code`."""

    def __init__(self, code: str) -> None:
        self.inner = httpx.AsyncHTTPTransport()
        self.code = code
        self.refused = 0

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if request.method == "POST" and request.url.path == "/v1/sessions":
            self.refused += 1
            body = {
                "type": "error",
                "error": {
                    "type": "invalid_request_error",
                    "message": "budget: no public list price for sneaky-model",
                    "details": {"error_code": self.code},
                },
            }
            return httpx.Response(400, content=json.dumps(body).encode(), request=request)
        return await self.inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self.inner.aclose()


async def test_the_apis_model_not_budgetable_fails_the_launch_clearly(sqlite_url: str) -> None:
    with world() as w:
        transport = RefuseCreate("model_not_budgetable")
        client = anthropic.AsyncAnthropic(
            api_key=API_KEY,
            base_url=w.url,
            max_retries=0,
            http_client=httpx.AsyncClient(transport=transport),
        )
        engine = make_engine(sqlite_url, pool_size=4)
        try:
            launcher = Launcher(engine, client, owner="tests", priced_models=["*"])
            with pytest.raises(LaunchRejected) as caught:
                await launcher.start(request(w, budget_usd=5))
        finally:
            engine.dispose()
        message = str(caught.value)
        assert "no public list price" in message
        assert "model_not_budgetable" in message
        assert "sneaky-model" in message  # the API's own words, kept
        assert transport.refused == 1  # not retried
        assert w.session_creates() == 0
    [launch] = rows(sqlite_url, Launch)
    assert launch.state == "failed"
    assert not launch.outcome_unknown
