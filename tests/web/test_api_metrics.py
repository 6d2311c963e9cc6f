"""API calls made through `wiring.api_client` are counted by method, route template and status,
429s on their own series, retries included; /metrics serves them."""

import asyncio

import anthropic
import httpx
import pytest
from prometheus_client import REGISTRY

from emulator import Emulator, EmulatorConfig, create_emulator
from idlehook import wiring
from idlehook.settings import Settings
from sessions.metrics import route_template
from store.engine import make_engine
from tests.support.servers import serve


def calls(method: str, route: str, status: str) -> float:
    value = REGISTRY.get_sample_value(
        "idlehook_api_calls_total", {"method": method, "route": route, "status": status}
    )
    return value or 0.0


def limited(method: str, route: str) -> float:
    value = REGISTRY.get_sample_value(
        "idlehook_api_rate_limited_total", {"method": method, "route": route}
    )
    return value or 0.0


def test_route_templates_keep_labels_bounded() -> None:
    assert route_template("/v1/sessions") == "/v1/sessions"
    assert route_template("/v1/sessions/sesn_01AbC/events") == "/v1/sessions/{id}/events"
    assert (
        route_template("/v1/sessions/sesn_1/threads/sthr_2/stream")
        == "/v1/sessions/{id}/threads/{id}/stream"
    )
    assert route_template("/v1/deployment_runs?page=x") == "/v1/deployment_runs"
    assert (
        route_template("/v1/memory_stores/memstore_1/memory_versions")
        == "/v1/memory_stores/{id}/memory_versions"
    )
    assert route_template("/v1/messages/count_tokens") == "/v1/messages/count_tokens"
    assert route_template("/v1/models/claude-opus-4-7") == "/v1/models/{id}"


def test_an_id_without_a_digit_is_still_an_id() -> None:
    # A random base62 tail has no digit about once in seventy ids; counting such a call under
    # its own label made test_calls_and_429s_are_counted fail that often.
    assert route_template("/v1/agents/agent_kQzTbXwYvRmPnLsHjGfDcBaZ") == "/v1/agents/{id}"
    assert (
        route_template("/v1/sessions/sesn_AbCdEfGhIjKlMnOpQrStUvWx/events")
        == "/v1/sessions/{id}/events"
    )


def test_calls_and_429s_are_counted(sqlite_url: str) -> None:
    emu = Emulator(EmulatorConfig())
    engine = make_engine(sqlite_url, pool_size=2)
    with serve(create_emulator(emulator=emu)) as url:
        settings = Settings(database_url=sqlite_url, api_key="k", base_url=url)

        async def ok() -> str:
            async with wiring.api_client(settings, engine) as client:
                agent = await client.beta.agents.create(name="m", model="claude-opus-4-7")
                await client.beta.agents.retrieve(agent.id)
                return agent.id

        before_create = calls("POST", "/v1/agents", "200")
        before_get = calls("GET", "/v1/agents/{id}", "200")
        asyncio.run(ok())
        assert calls("POST", "/v1/agents", "200") == before_create + 1
        assert calls("GET", "/v1/agents/{id}", "200") == before_get + 1

        emu.apply_config({"api_faults": {"error_429": 1.0}})

        async def throttled() -> None:
            async with wiring.api_client(settings, engine, max_retries=1) as client:
                await client.beta.agents.list()

        before_429 = calls("GET", "/v1/agents", "429")
        before_limited = limited("GET", "/v1/agents")
        with pytest.raises(anthropic.RateLimitError):
            asyncio.run(throttled())
        # The SDK's retry is a second response: both are counted.
        assert calls("GET", "/v1/agents", "429") == before_429 + 2
        assert limited("GET", "/v1/agents") == before_limited + 2
    engine.dispose()


def test_metrics_endpoint_exposes_the_series(sqlite_url: str) -> None:
    settings = Settings(database_url=sqlite_url, api_key="k", base_url="http://127.0.0.1:9")
    svc = wiring.service(settings, run_worker=False)
    try:
        with serve(svc.app) as url:
            text = httpx.get(url + "/metrics").text
    finally:
        svc.engine.dispose()
    for name in (
        "idlehook_api_calls_total",
        "idlehook_api_rate_limited_total",
        "idlehook_webhook_deliveries",
        "idlehook_webhook_signature_failures",
        "idlehook_handler_runs_total",
        "idlehook_reaper_actions_total",
    ):
        assert f"# TYPE {name.removesuffix('_total')}" in text or f"# TYPE {name}" in text, name
