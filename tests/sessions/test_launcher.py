"""Starting sessions against the emulator over loopback with the real SDK."""

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx2 as httpx  # the SDK drives its own fork of httpx
import pytest
from sqlmodel import Session, select

from sessions.launch_queue import LaunchDrainer
from sessions.launcher import InvalidLaunch, LaunchError, LaunchRejected, LaunchRequest
from store.engine import make_engine
from store.models import Launch, TrackedSession
from tests.sessions.test_launch_helpers import launcher_for, world


def rows(db_url: str, model):
    engine = make_engine(db_url, pool_size=1)
    try:
        with Session(engine) as db:
            return list(db.exec(select(model)))
    finally:
        engine.dispose()


async def test_start_is_one_create_carrying_the_message(db_url: str) -> None:
    with world() as w, launcher_for(w, db_url, owner="team-a") as launcher:
        request = LaunchRequest(
            agent=w.agent_id,
            environment=w.limited_env,
            message="Summarise the README",
            title="nightly",
            metadata={"ticket": "T-42"},
            route="triage",
            deadline="2h",
        )
        before = datetime.now(UTC)
        result = await launcher.start(request)

        assert result.state == "created"
        assert result.session_id is not None
        assert result.warnings == []
        assert w.session_creates() == 1
        assert w.emu.requests["POST /v1/sessions"] == 1
        # Nothing held open, and the launch did not wait for the run.
        assert w.open_streams() == 0
        assert w.emu.requests["GET /v1/sessions/{id}/events/stream"] == 0
        client = w.sync_client()
        session = client.beta.sessions.retrieve(result.session_id)
        assert session.status == "running"
        assert session.agent.version == 1  # pinned to the version current at launch
        events = list(client.beta.sessions.events.list(result.session_id))
        messages = [e for e in events if e.type == "user.message"]
        assert [getattr(m.content[0], "text", None) for m in messages] == ["Summarise the README"]
        meta = session.metadata
        assert meta["ticket"] == "T-42"
        assert meta["idlehook_owner"] == "team-a"
        assert meta["idlehook_route"] == "triage"
        assert meta["idlehook_idempotency_key"] == result.idempotency_key
        deadline = datetime.fromisoformat(meta["idlehook_deadline"].replace("Z", "+00:00"))
        assert timedelta(hours=2) - timedelta(seconds=5) < deadline - before
        assert deadline - before <= timedelta(hours=2, seconds=5)

    [tracked] = rows(db_url, TrackedSession)
    assert tracked.id == result.session_id
    assert tracked.launched_by_us
    assert tracked.owner == "team-a"
    assert tracked.route == "triage"
    assert tracked.agent_id == w.agent_id
    assert tracked.agent_version == 1
    assert tracked.environment_id == w.limited_env
    assert tracked.status == "running"
    assert tracked.deadline == result.deadline
    assert tracked.session_metadata["ticket"] == "T-42"
    assert tracked.created_at is not None


async def test_a_repeated_start_returns_the_same_session(db_url: str) -> None:
    with world() as w, launcher_for(w, db_url) as launcher:
        request = LaunchRequest(
            agent=w.agent_id, environment=w.limited_env, message="hi", idempotency_key="job-7"
        )
        first = await launcher.start(request)
        second = await launcher.start(request)
        assert first.new
        assert not second.new
        assert second.session_id == first.session_id
        assert w.session_creates() == 1


async def test_without_a_key_each_start_is_new_and_lookups_are_cached(sqlite_url: str) -> None:
    with world() as w, launcher_for(w, sqlite_url) as launcher:
        request = LaunchRequest(agent=w.agent_id, environment=w.limited_env, message="hi")
        a = await launcher.start(request)
        b = await launcher.start(request)
        assert a.session_id != b.session_id
        assert a.idempotency_key != b.idempotency_key
        assert w.session_creates() == 2
        assert w.emu.requests["GET /v1/agents/{id}"] == 1
        assert w.emu.requests["GET /v1/environments/{id}"] == 1


async def test_an_explicit_version_is_used_without_a_lookup(sqlite_url: str) -> None:
    with world() as w, launcher_for(w, sqlite_url) as launcher:
        w.sync_client().beta.agents.update(w.agent_id, version=1, system="v2")
        result = await launcher.start(
            LaunchRequest(agent=f"{w.agent_id}:1", environment=w.limited_env, message="hi")
        )
        assert result.agent_version == 1
        assert w.emu.requests["GET /v1/agents/{id}"] == 0
        pinned = await launcher.start(
            LaunchRequest(agent=w.agent_id, environment=w.limited_env, message="hi")
        )
        assert pinned.agent_version == 2


BAD_INPUTS = [
    ({"agent": "agent x"}, InvalidLaunch, "bad agent 'agent x'"),
    ({"agent": "agent_1:v2"}, InvalidLaunch, "ID:VERSION"),
    ({"agent": "agent_1:0"}, InvalidLaunch, "versions start at 1"),
    ({"deadline": "2 hours"}, InvalidLaunch, "bad duration '2 hours'"),
    ({"deadline": "5"}, InvalidLaunch, "deadline"),
    ({"metadata": {f"k{i}": "v" for i in range(15)}}, InvalidLaunch, "too many metadata pairs"),
    ({"metadata": {"x" * 65: "v"}}, InvalidLaunch, "'" + "x" * 65 + "' is 65 characters"),
    ({"metadata": {"note": "v" * 513}}, InvalidLaunch, "value for 'note' is 513 characters"),
    ({"metadata": {"idlehook_owner": "me"}}, InvalidLaunch, "'idlehook_owner' is reserved"),
    ({"files": ["./report.pdf"]}, InvalidLaunch, "not a file id"),
    ({"message": ""}, InvalidLaunch, "message"),
    ({"agent": "agent_nope"}, LaunchRejected, "unknown agent agent_nope"),
    ({"environment": "env_nope"}, LaunchRejected, "unknown environment env_nope"),
]


@pytest.mark.parametrize(("change", "error", "text"), BAD_INPUTS)
async def test_bad_input_gets_a_clear_error_and_creates_nothing(
    sqlite_url: str, change: dict[str, Any], error: type[LaunchError], text: str
) -> None:
    with world() as w, launcher_for(w, sqlite_url) as launcher:
        fields = {"agent": w.agent_id, "environment": w.limited_env, "message": "hi", **change}
        with pytest.raises(error) as caught:
            await launcher.start(LaunchRequest.parse(fields))
        assert text in str(caught.value)
        assert w.session_creates() == 0
        assert w.emu.requests["POST /v1/sessions"] == 0
    if error is InvalidLaunch:
        assert rows(sqlite_url, Launch) == []  # refused before anything was written


async def test_metadata_limits_count_the_reserved_keys(sqlite_url: str) -> None:
    with world() as w, launcher_for(w, sqlite_url) as launcher:
        base = {"agent": w.agent_id, "environment": w.limited_env, "message": "hi"}
        # owner + idempotency key are always set: 14 of the user's own fit.
        ok = LaunchRequest.parse({**base, "metadata": {f"k{i}": "v" for i in range(14)}})
        assert (await launcher.start(ok)).state == "created"
        # With a route and a deadline two more are taken.
        too_many = LaunchRequest.parse(
            {
                **base,
                "route": "r",
                "deadline": "1h",
                "metadata": {f"k{i}": "v" for i in range(13)},
            }
        )
        with pytest.raises(InvalidLaunch, match="13 given \\+ 4 set by idlehook"):
            await launcher.start(too_many)


async def test_unrestricted_environment_warns_and_strict_refuses(sqlite_url: str) -> None:
    with world() as w, launcher_for(w, sqlite_url) as launcher:
        request = LaunchRequest(agent=w.agent_id, environment=w.open_env, message="hi")
        result = await launcher.start(request)
        assert result.state == "created"
        assert len(result.warnings) == 1
        assert "unrestricted networking" in result.warnings[0]
        # Cached, still warned on every launch.
        again = await launcher.start(request)
        assert again.warnings == result.warnings
        assert w.emu.requests["GET /v1/environments/{id}"] == 1

        with pytest.raises(LaunchRejected, match="refusing to launch into environment"):
            await launcher.start(request.model_copy(update={"strict": True}))
        assert w.session_creates() == 2


async def test_strict_from_configuration(sqlite_url: str) -> None:
    with world() as w, launcher_for(w, sqlite_url, strict=True) as launcher:
        with pytest.raises(LaunchRejected, match="strict mode is on"):
            await launcher.start(
                LaunchRequest(agent=w.agent_id, environment=w.open_env, message="hi")
            )
        limited = await launcher.start(
            LaunchRequest(agent=w.agent_id, environment=w.limited_env, message="hi")
        )
        assert limited.state == "created"
        assert w.session_creates() == 1


async def test_preflight_is_cached_in_the_store_across_launchers(sqlite_url: str) -> None:
    with world() as w:
        request = LaunchRequest(agent=w.agent_id, environment=w.open_env, message="hi")
        with launcher_for(w, sqlite_url) as first:
            await first.start(request)
        with launcher_for(w, sqlite_url) as second:
            result = await second.start(request)
        assert result.warnings
        assert w.emu.requests["GET /v1/environments/{id}"] == 1


async def test_enqueue_returns_at_once_and_a_drainer_creates(db_url: str) -> None:
    with world() as w, launcher_for(w, db_url) as launcher:
        results = await launcher.enqueue_many(
            [
                LaunchRequest(agent=w.agent_id, environment=w.limited_env, message=f"job {i}")
                for i in range(5)
            ]
        )
        assert [r.state for r in results] == ["queued"] * 5
        assert w.session_creates() == 0
        drainer = LaunchDrainer(launcher, concurrency=4, poll_seconds=0.05)
        await asyncio.wait_for(drainer.run(drain=True), 30)
        assert w.session_creates() == 5
    launches = rows(db_url, Launch)
    assert {launch.state for launch in launches} == {"created"}
    assert len({launch.session_id for launch in launches}) == 5
    assert len(rows(db_url, TrackedSession)) == 5


async def test_a_bad_line_rejects_the_whole_batch(sqlite_url: str) -> None:
    with world() as w, launcher_for(w, sqlite_url) as launcher:
        good = LaunchRequest(agent=w.agent_id, environment=w.limited_env, message="ok")
        bad = good.model_copy(update={"deadline": "soon"})
        with pytest.raises(InvalidLaunch, match="request 2: deadline"):
            await launcher.enqueue_many([good, bad, good])
    assert rows(sqlite_url, Launch) == []


async def test_a_429_is_retried_through_the_queue_not_lost(sqlite_url: str) -> None:
    # The emulator allows one create per emulated minute (0.1 s real at speed 600), while
    # this launcher's pacer believes in a far higher limit: the API says 429, we wait and retry.
    config = {"speed": 600.0, "rate_limits": {"create_per_minute": 1}}
    with world(**config) as w, launcher_for(w, sqlite_url) as launcher:
        requests = [
            LaunchRequest(agent=w.agent_id, environment=w.limited_env, message=f"job {i}")
            for i in range(3)
        ]
        results = await asyncio.gather(*(launcher.start(r) for r in requests))
        assert all(r.state == "created" for r in results)
        assert len({r.session_id for r in results}) == 3
        assert w.session_creates() == 3
        assert w.emu.rate_limited["POST /v1/sessions"] >= 1


class LoseFirstCreateResponse(httpx.AsyncBaseTransport):
    """The network, misbehaving: the first session create reaches the API, then the answer is
    lost (a read timeout), so the client cannot know whether the session exists."""

    def __init__(self) -> None:
        self.inner = httpx.AsyncHTTPTransport()
        self.lost = 0

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await self.inner.handle_async_request(request)
        if request.method == "POST" and request.url.path == "/v1/sessions" and not self.lost:
            await response.aread()
            self.lost += 1
            raise httpx.ReadTimeout("response lost", request=request)
        return response

    async def aclose(self) -> None:
        await self.inner.aclose()


async def test_a_create_with_unknown_outcome_is_found_not_doubled(sqlite_url: str) -> None:
    import anthropic

    from sessions.launcher import Launcher
    from tests.sessions.test_launch_helpers import API_KEY

    with world() as w:
        transport = LoseFirstCreateResponse()
        client = anthropic.AsyncAnthropic(
            api_key=API_KEY,
            base_url=w.url,
            max_retries=0,
            http_client=httpx.AsyncClient(transport=transport),
        )
        engine = make_engine(sqlite_url, pool_size=4)
        try:
            launcher = Launcher(engine, client, owner="tests")
            result = await launcher.start(
                LaunchRequest(agent=w.agent_id, environment=w.limited_env, message="once")
            )
        finally:
            engine.dispose()
        assert transport.lost == 1
        assert result.state == "created"
        assert w.session_creates() == 1  # found by its idempotency key, not created again
        assert w.emu.requests["GET /v1/sessions"] >= 1
        [launch] = rows(sqlite_url, Launch)
        assert launch.session_id == result.session_id
        assert launch.attempts == 1
