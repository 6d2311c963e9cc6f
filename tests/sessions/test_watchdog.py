"""The deadline watchdog: finds what a dropped webhook never said, interrupts overruns."""

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy.engine import Engine
from sqlmodel import Session

from sessions.launcher import LaunchRequest
from sessions.pacing import Pacer
from sessions.watchdog import Watchdog, plan
from store.engine import make_engine
from store.models import TrackedSession
from tests.sessions.test_launch_helpers import launcher_for, world
from tests.support.servers import wait_for

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
MIN = timedelta(minutes=1)


def tracked(db_url: str, session_id: str) -> TrackedSession:
    engine = make_engine(db_url, pool_size=1)
    try:
        with Session(engine) as db:
            row = db.get(TrackedSession, session_id)
            assert row is not None
            return row
    finally:
        engine.dispose()


def watchdog_for(w, db_url: str, **kwargs) -> tuple[Watchdog, Engine]:
    engine = make_engine(db_url, pool_size=4)
    pacer = Pacer(engine, {"create": 60_000, "read": 60_000})
    return Watchdog(engine, w.async_client(pacer), **kwargs), engine


def view(**fields) -> TrackedSession:
    base = {"id": "sesn_1", "status": "running", "created_at": NOW - 30 * MIN}
    return TrackedSession(**{**base, **fields})


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({}, "silent"),  # never heard a webhook, launched 30 min ago
        ({"last_webhook_at": NOW - 2 * MIN}, None),
        ({"last_webhook_at": NOW - 20 * MIN, "polled_at": NOW - MIN}, None),
        ({"created_at": NOW - 5 * MIN}, None),  # too young to be suspicious
        ({"status": "idle"}, None),
        ({"status": "terminated", "deadline": NOW - MIN}, None),
        ({"deadline": NOW - MIN, "last_webhook_at": NOW}, "past_deadline"),
        ({"deadline": NOW + MIN, "last_webhook_at": NOW}, None),
        ({"deadline": NOW - MIN, "reap_requested_at": NOW - MIN}, None),
        ({"status": None}, "silent"),
    ],
)
def test_plan(fields: dict[str, Any], expected: str | None) -> None:
    assert plan(view(**fields), NOW, timedelta(minutes=10)) == expected


async def test_a_missed_idle_webhook_is_caught_by_the_sweep(db_url: str) -> None:
    # Sessions finish in 2 emulated seconds (0.02 s real) and every webhook is dropped.
    with world(speed=100.0, run_seconds=2.0, faults={"drop_all": True}) as w:
        with launcher_for(w, db_url) as launcher:
            result = await launcher.start(
                LaunchRequest(agent=w.agent_id, environment=w.limited_env, message="hi")
            )
        sid = result.session_id
        assert sid is not None
        assert tracked(db_url, sid).status == "running"
        client = w.sync_client()
        wait_for(lambda: client.beta.sessions.retrieve(sid).status == "idle")

        watchdog, engine = watchdog_for(w, db_url, silence=timedelta(0))
        try:
            report = await watchdog.sweep()
            assert report.changes == {sid: "idle"}
            row = tracked(db_url, sid)
            assert row.status == "idle"
            assert row.polled_at is not None
            assert row.reap_requested_at is None
            # Idle is quiet: the next sweep leaves it alone.
            assert (await watchdog.sweep()).polled == 0
        finally:
            engine.dispose()


async def test_a_quiet_recent_session_is_not_polled(sqlite_url: str) -> None:
    with world() as w:
        with launcher_for(w, sqlite_url) as launcher:
            await launcher.start(
                LaunchRequest(agent=w.agent_id, environment=w.limited_env, message="hi")
            )
        watchdog, engine = watchdog_for(w, sqlite_url, silence=timedelta(hours=1))
        try:
            report = await watchdog.sweep()
        finally:
            engine.dispose()
        assert report.checked == 1
        assert report.polled == 0
        assert w.emu.requests["GET /v1/sessions/{id}"] == 0


async def test_past_deadline_and_running_is_interrupted_and_handed_to_the_reaper(
    db_url: str,
) -> None:
    with world(run_seconds=3600.0) as w:
        with launcher_for(w, db_url) as launcher:
            result = await launcher.start(
                LaunchRequest(
                    agent=w.agent_id, environment=w.limited_env, message="hi", deadline="0s"
                )
            )
        sid = result.session_id
        assert sid is not None
        watchdog, engine = watchdog_for(w, db_url, silence=timedelta(hours=1))
        try:
            report = await watchdog.sweep()
            assert report.interrupted == 1
            row = tracked(db_url, sid)
            assert row.reap_requested_at is not None
            assert row.status == "running"
            events = list(w.sync_client().beta.sessions.events.list(sid))
            assert "user.interrupt" in [e.type for e in events]
            # Marked once: later sweeps do not interrupt again.
            assert (await watchdog.sweep()).interrupted == 0
        finally:
            engine.dispose()


async def test_a_deleted_session_is_marked_gone(sqlite_url: str) -> None:
    with world() as w:
        with launcher_for(w, sqlite_url) as launcher:
            result = await launcher.start(
                LaunchRequest(agent=w.agent_id, environment=w.limited_env, message="hi")
            )
        sid = result.session_id
        assert sid is not None
        w.sync_client().beta.sessions.delete(sid)
        watchdog, engine = watchdog_for(w, sqlite_url, silence=timedelta(0))
        try:
            report = await watchdog.sweep()
        finally:
            engine.dispose()
        assert report.gone == 1
        assert tracked(sqlite_url, sid).deleted_at is not None
