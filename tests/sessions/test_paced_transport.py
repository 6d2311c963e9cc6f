"""The paced transport under the real SDK, against the emulator on loopback, on SQLite and
PostgreSQL: which requests take a slot, and a 429 that holds every process back."""

import time
from collections.abc import Iterator
from typing import Any

import anthropic
import pytest
from sqlalchemy.engine import Engine

from emulator.app import create_emulator
from emulator.config import EmulatorConfig
from emulator.core import Emulator
from idlehook import wiring
from idlehook.settings import Settings
from sessions.paced_transport import paced_http_client, rate_class
from sessions.pacing import Pacer
from store import rate_slots
from store.engine import make_engine
from tests.sessions.paced import paced_calls
from tests.support.servers import serve

RPM = {"create": 60_000.0, "read": 60_000.0}


@pytest.mark.parametrize(
    ("method", "path", "expected"),
    [
        # The API's 300/min class: creating agents, sessions, vaults.
        ("POST", "/v1/sessions", "create"),
        ("POST", "/v1/agents", "create"),
        ("POST", "/v1/vaults", "create"),
        # Its 600/min class: every other agents, sessions, vaults call.
        ("GET", "/v1/sessions", "read"),
        ("GET", "/v1/sessions/sesn_1", "read"),
        ("POST", "/v1/sessions/sesn_1", "read"),  # an update is no create
        ("DELETE", "/v1/sessions/sesn_1", "read"),
        ("POST", "/v1/sessions/sesn_1/archive", "read"),
        ("GET", "/v1/sessions/sesn_1/events", "read"),
        ("POST", "/v1/sessions/sesn_1/events", "read"),
        ("GET", "/v1/sessions/sesn_1/events/stream", "read"),
        ("GET", "/v1/agents/agent_1", "read"),
        ("GET", "/v1/agents/agent_1/versions", "read"),
        ("POST", "/v1/agents/agent_1/archive", "read"),
        # Limits of their own, or none the emulator or the API notes put in either class.
        ("GET", "/v1/environments/env_1", None),
        ("POST", "/v1/environments", None),
        ("GET", "/v1/files", None),
        ("POST", "/v1/deployments", None),
        ("GET", "/v1/organizations/webhooks", None),
        # Behind a gateway's prefix, the API's path still decides.
        ("POST", "/anthropic/v1/sessions?beta=true", "create"),
        ("GET", "/healthz", None),
    ],
)
def test_requests_are_classed_as_the_api_limits_them(
    method: str, path: str, expected: str | None
) -> None:
    assert rate_class(method, path) == expected


@pytest.fixture
def engines(db_url: str) -> Iterator[tuple[Engine, Engine]]:
    # Two engines, two pools: two processes sharing one budget.
    first, second = make_engine(db_url, pool_size=4), make_engine(db_url, pool_size=4)
    yield first, second
    first.dispose()
    second.dispose()


@pytest.fixture
def emu() -> Iterator[tuple[Emulator, str]]:
    emulator = Emulator(EmulatorConfig())
    with serve(create_emulator(emulator=emulator)) as url:
        yield emulator, url


def settings_for(url: str, db_url: str) -> Settings:
    return Settings(
        api_key="k", base_url=url, database_url=db_url, create_rpm=60_000, read_rpm=60_000
    )


def rated_requests(emulator: Emulator) -> dict[str, int]:
    """What the emulator answered, by the class it counts requests against."""
    counts = {"create": 0, "read": 0}
    for key, n in emulator.requests.items():
        method, template = key.split(" ", 1)
        kind = rate_class(method, template)
        if kind is not None:
            counts[kind] += n
    return counts


async def test_every_request_of_a_client_idlehook_builds_takes_a_slot(
    emu: tuple[Emulator, str], engines: tuple[Engine, Engine], db_url: str
) -> None:
    emulator, url = emu
    before = {k: paced_calls(k) for k in ("create", "read")}
    async with wiring.api_client(settings_for(url, db_url), engines[0]) as client:
        agent = await client.beta.agents.create(name="paced", model="claude-opus-4-7")
        env = await client.beta.environments.create(name="paced")
        session = await client.beta.sessions.create(agent=agent.id, environment_id=env.id)
        await client.beta.sessions.retrieve(session.id)
        # A copy with other options shares the transport: it cannot step around the budget.
        await client.with_options(max_retries=0).beta.sessions.events.list(session.id)
        await client.beta.sessions.delete(session.id)

    assert rated_requests(emulator) == {"create": 2, "read": 3}
    assert {k: paced_calls(k) - before[k] for k in before} == {"create": 2, "read": 3}
    assert emulator.requests["POST /v1/environments"] == 1  # sent, not paced


async def test_a_429_holds_back_every_process_and_the_sdk_retry_then_succeeds(
    emu: tuple[Emulator, str], engines: tuple[Engine, Engine], db_url: str
) -> None:
    emulator, url = emu
    other = Pacer(engines[1], RPM)  # a second process on the same store
    seen: dict[str, float] = {}

    async def on_429(response: Any) -> None:
        # Runs once the transport has handed the 429 up, before the SDK's retry.
        if response.status_code == 429 and not seen:
            seen["slot"] = other.take_slot("read")
            emulator.apply_config({"api_faults": {"error_429": 0.0}})

    # As wiring.api_client builds it, with one more response hook.
    pacer = wiring.pacer(settings_for(url, db_url), engines[0])
    http = paced_http_client(pacer, event_hooks={"response": [on_429]})
    async with anthropic.AsyncAnthropic(api_key="k", base_url=url, http_client=http) as client:
        agent = await client.beta.agents.create(name="paced", model="claude-opus-4-7")
        # The injected 429 asks for `retry-after: 1` (seconds).
        emulator.apply_config({"api_faults": {"error_429": 1.0}})
        asked_at = time.time()
        fetched = await client.beta.agents.retrieve(agent.id)

    assert fetched.id == agent.id  # the SDK's retry went through
    assert emulator.faults_injected["429"] == 1
    assert emulator.requests["GET /v1/agents/{id}"] == 2
    # The other process's next read slot lies past the server's advice.
    assert seen["slot"] >= asked_at + 1.0
    pushed = rate_slots.next_free(engines[1], "read")
    assert pushed is not None
    assert pushed >= asked_at + 1.0


async def test_a_pacer_whose_store_is_down_sends_nothing(
    emu: tuple[Emulator, str], tmp_path: Any
) -> None:
    emulator, url = emu
    (tmp_path / "down").mkdir()
    broken = make_engine(f"sqlite:///{tmp_path / 'down'}", pool_size=1)  # a directory
    settings = Settings(api_key="k", base_url=url)
    try:
        async with wiring.api_client(settings, broken, max_retries=0) as client:
            with pytest.raises(anthropic.APIConnectionError) as caught:
                await client.beta.agents.list()
    finally:
        broken.dispose()
    assert "unable to open database file" in str(caught.value.__cause__)
    assert emulator.requests["GET /v1/agents"] == 0
