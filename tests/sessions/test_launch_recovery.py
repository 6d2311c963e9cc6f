"""Launches whose outcome is unknown, whose store fails, or whose lease was taken over: never
doubled, never failed for our own store's sake."""

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import anthropic
import httpx2 as httpx  # the SDK drives its own fork of httpx
import pytest
import sqlalchemy.exc

from sessions.launch_retry import decide_launch_retry
from sessions.launcher import Launcher, LaunchRejected, LaunchRequest
from sessions.paced_transport import PacedTransport
from sessions.pacing import Pacer
from store.engine import make_engine
from store.launches import LaunchStore, NewLaunch
from store.models import Launch, LaunchState
from store.sessions import Launched, SessionUpdate
from tests.sessions.test_launch_helpers import API_KEY, World, launcher_for, world
from tests.sessions.test_launcher import rows

RPM = {"create": 60_000, "read": 60_000}


class LoseResponses(httpx.AsyncBaseTransport):
    """The network, misbehaving: the first `n` calls to "METHOD /path" reach the API, then the
    answer is lost (a read timeout), so the client cannot know what happened."""

    def __init__(self, lose: dict[str, int]) -> None:
        self.inner = httpx.AsyncHTTPTransport()
        self.left = dict(lose)
        self.lost = 0

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await self.inner.handle_async_request(request)
        route = f"{request.method} {request.url.path}"
        if self.left.get(route, 0) > 0:
            self.left[route] -= 1
            self.lost += 1
            await response.aread()
            raise httpx.ReadTimeout("response lost", request=request)
        return response

    async def aclose(self) -> None:
        await self.inner.aclose()


@contextmanager
def lossy_launcher(
    w: World, db_url: str, lose: dict[str, int], **kwargs: Any
) -> Iterator[Launcher]:
    engine = make_engine(db_url, pool_size=4)
    # Paced above the lossy network, as wiring.api_client paces above the real one.
    paced = PacedTransport(LoseResponses(lose), Pacer(engine, RPM))
    client = anthropic.AsyncAnthropic(
        api_key=API_KEY,
        base_url=w.url,
        max_retries=0,
        http_client=httpx.AsyncClient(transport=paced),
    )
    try:
        yield Launcher(engine, client, owner="tests", **kwargs)
    finally:
        engine.dispose()


async def test_an_unanswered_last_attempt_is_looked_for_before_failing(db_url: str) -> None:
    with world() as w, lossy_launcher(w, db_url, {"POST /v1/sessions": 1}, max_attempts=1) as lc:
        result = await lc.start(
            LaunchRequest(agent=w.agent_id, environment=w.limited_env, message="x")
        )
        assert result.state == "created"
        assert w.session_creates() == 1
        assert w.emu.requests["GET /v1/sessions"] == 1
    [launch] = rows(db_url, Launch)
    assert launch.session_id == result.session_id


async def test_a_failed_launch_of_unknown_outcome_is_looked_for_when_requeued(db_url: str) -> None:
    # The create's answer is lost and so is the search for it: the launch fails, but the same
    # key later finds the session rather than creating a second one.
    lose = {"POST /v1/sessions": 1, "GET /v1/sessions": 1}
    with world() as w, lossy_launcher(w, db_url, lose, max_attempts=1) as launcher:
        request = LaunchRequest(
            agent=w.agent_id, environment=w.limited_env, message="x", idempotency_key="job-1"
        )
        with pytest.raises(LaunchRejected, match="gave up after 1 attempts"):
            await launcher.start(request)
        [failed] = rows(db_url, Launch)
        assert failed.state == LaunchState.FAILED
        assert failed.outcome_unknown
        assert failed.first_attempt_at is not None

        again = await launcher.start(request)
        assert again.state == "created"
        assert again.new  # re-queued
        assert w.session_creates() == 1
    [launch] = rows(db_url, Launch)
    assert launch.session_id == again.session_id
    assert launch.first_attempt_at == failed.first_attempt_at


def _unreachable_store(db_url: str, tmp_path: Path) -> str:
    if db_url.startswith("sqlite"):
        (tmp_path / "down").mkdir()
        return f"sqlite:///{tmp_path / 'down'}"  # a directory: "unable to open database file"
    return "postgresql://postgres@127.0.0.1:1/test"  # nothing listens there


async def test_a_store_outage_is_retried_not_failed(db_url: str, tmp_path: Path) -> None:
    # The store the client's pacer takes its slots from is down: the launch waits in the queue
    # (no attempt counted, even with max_attempts=1) and is created once the store answers.
    broken = make_engine(_unreachable_store(db_url, tmp_path), pool_size=1)
    engine = make_engine(db_url, pool_size=4)
    try:
        with world() as w:
            request = LaunchRequest(
                agent=w.agent_id, environment=w.limited_env, message="x", idempotency_key="job-2"
            )
            down = Launcher(
                engine, w.async_client(Pacer(broken, RPM)), owner="tests", max_attempts=1
            )
            waiting = await down.start(request, wait_seconds=0.1)
            assert waiting.state == "queued"
            assert waiting.error is not None
            assert waiting.error.startswith("store unavailable: OperationalError")
            [launch] = rows(db_url, Launch)
            assert launch.attempts == 0
            assert w.session_creates() == 0

            with launcher_for(w, db_url) as up:
                created = await up.start(request)
            assert created.state == "created"
            assert w.session_creates() == 1
    finally:
        broken.dispose()
        engine.dispose()


def test_store_errors_are_retried_but_bugs_are_not() -> None:
    lost = sqlalchemy.exc.OperationalError("SELECT 1", {}, Exception("server closed"))
    decision = decide_launch_retry(lost, sent=False)
    assert decision.retry
    assert decision.store_error
    assert not decision.outcome_unknown
    assert decision.message == "store unavailable: Exception: server closed"
    clash = sqlalchemy.exc.IntegrityError("INSERT", {}, Exception("unique"))
    assert not decide_launch_retry(clash, sent=False).retry


class Clock:
    def __init__(self) -> None:
        self.at = datetime(2026, 1, 1, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.at


def test_a_stale_claim_by_the_same_owner_is_fenced_out(db_url: str) -> None:
    clock = Clock()
    engine = make_engine(db_url, pool_size=2)
    try:
        store = LaunchStore(engine, now=clock)
        store.add(NewLaunch("job-3", {}))
        lease = timedelta(minutes=5)
        [stale] = store.claim("drainer-1", limit=1, lease=lease)
        clock.at += timedelta(minutes=6)  # the task stalled past its lease
        [fresh] = store.claim("drainer-1", limit=1, lease=lease)
        assert fresh.id == stale.id
        assert stale.lease_owner is not None
        assert fresh.lease_owner is not None
        assert stale.lease_owner.startswith("drainer-1")
        assert stale.lease_owner != fresh.lease_owner
        assert fresh.id is not None

        old = stale.lease_owner
        seen = SessionUpdate(agent_id="a", agent_version=1, environment_id="e", status="running")
        facts = Launched("sesn_stale", owner="t", route=None, deadline=None, seen=seen)
        assert not store.begin_create(fresh.id, old, lease)
        assert not store.extend(fresh.id, old, lease)
        assert not store.retry(fresh.id, old, at=clock(), error="x", outcome_unknown=True)
        assert not store.fail(fresh.id, old, "x")
        assert not store.complete(fresh.id, old, facts)
        assert store.begin_create(fresh.id, fresh.lease_owner, lease)
        assert store.complete(fresh.id, fresh.lease_owner, replace(facts, session_id="sesn_fresh"))
        assert store.get(fresh.id).session_id == "sesn_fresh"  # type: ignore[union-attr]
    finally:
        engine.dispose()


async def test_a_stalled_task_of_the_same_drainer_creates_nothing(db_url: str) -> None:
    clock = Clock()
    with world() as w, launcher_for(w, db_url, now=clock) as launcher:
        await launcher.enqueue(
            LaunchRequest(agent=w.agent_id, environment=w.limited_env, message="x")
        )
        [stale] = launcher.store.claim("drainer-1", limit=1, lease=launcher.lease)
        clock.at += launcher.lease + timedelta(seconds=1)
        [fresh] = launcher.store.claim("drainer-1", limit=1, lease=launcher.lease)
        await launcher.process(stale)
        assert w.session_creates() == 0
        await launcher.process(fresh)
        assert w.session_creates() == 1
    [launch] = rows(db_url, Launch)
    assert launch.state == LaunchState.CREATED
