"""Follow-ups against the emulator over loopback with the real SDK: the Python API
(`Launcher.send`), `POST /sessions/{id}/messages` and `idlehook send`.

The whole service archiving each turn is tests/e2e/test_followups_pipeline.py.
"""

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import SecretStr
from starlette.applications import Starlette

from console.followups_api import followup_routes
from idlehook.cli import main
from sessions.followups import FollowUpError, InvalidFollowUp, KeyConflict, SessionClosed
from sessions.followups import SessionNotFound as NoSession
from sessions.launcher import Launcher, LaunchRequest
from sessions.metadata import DEADLINE_KEY, format_deadline
from sessions.session_view import parse_rfc3339
from store import followups as rows
from store.models import FollowUpState, utcnow
from store.sessions import SessionStore
from tests.sessions.test_launch_helpers import API_KEY, World, launcher_for, world
from tests.support import cli
from tests.support.servers import serve, wait_for

TOKEN = "followup-t0ken"
AUTH = {"authorization": f"Bearer {TOKEN}"}
UPDATE = "POST /v1/sessions/{id}"

_logging_back_to_defaults = cli.logging_back_to_defaults


@pytest.fixture
def w() -> Iterator[World]:
    # Turns end quickly (2 emulated seconds at 50x), so sessions go idle on their own.
    with world(speed=50.0, run_seconds=2.0) as running:
        yield running


@pytest.fixture
def launcher(w: World, db_url: str) -> Iterator[Launcher]:
    with launcher_for(w, db_url, owner="followups") as launcher:
        yield launcher


async def start(w: World, launcher: Launcher, message: str, **fields: Any) -> str:
    request = LaunchRequest(agent=w.agent_id, environment=w.limited_env, message=message, **fields)
    result = await launcher.start(request)
    assert result.session_id is not None
    idle(w, result.session_id)
    return result.session_id


def idle(w: World, session_id: str) -> None:
    """Wait for the session to rest: idle, or terminated for good."""
    client = w.sync_client()
    resting = ("idle", "terminated")
    wait_for(lambda: client.beta.sessions.retrieve(session_id).status in resting, timeout=10)


def user_messages(w: World, session_id: str) -> list[str]:
    """The `user.message` texts the emulator holds, in order: what reached the session."""
    return [
        e["content"][0]["text"]
        for e in w.emu.store.session(session_id).events
        if e["type"] == "user.message"
    ]


def deadline_of(w: World, session_id: str) -> datetime | None:
    metadata = w.sync_client().beta.sessions.retrieve(session_id).metadata
    return parse_rfc3339(metadata.get(DEADLINE_KEY))


def near(value: datetime | None, expected: datetime, slack: float = 5.0) -> bool:
    return value is not None and abs((value - expected).total_seconds()) <= slack


# --- the Python API ---------------------------------------------------------------------------


async def test_a_follow_up_is_one_message_and_its_key_sends_it_once(
    w: World, launcher: Launcher
) -> None:
    session_id = await start(w, launcher, "first #script:long:2")
    sent = await launcher.send(session_id, "second #script:long:3", idempotency_key="turn-2")
    assert sent.new
    assert not sent.recovered
    assert sent.event_id is not None
    assert sent.event_id.startswith("sevt_")
    assert w.open_streams() == 0
    # The session runs its second turn and rests again: the emulator ran what we sent.
    idle(w, session_id)
    agent_texts = [
        e["content"][0]["text"]
        for e in w.emu.store.session(session_id).events
        if e["type"] == "agent.message"
    ]
    assert agent_texts[-1] == "Part 3."

    again = await launcher.send(session_id, "second #script:long:3", idempotency_key="turn-2")
    assert (again.new, again.event_id) == (False, sent.event_id)
    assert user_messages(w, session_id) == ["first #script:long:2", "second #script:long:3"]
    # The same key with other words is a mistake, not a second message.
    with pytest.raises(KeyConflict, match="different message"):
        await launcher.send(session_id, "something else", idempotency_key="turn-2")
    # Without a key each call is a new message: a person asked twice.
    first = await launcher.send(session_id, "and again")
    second = await launcher.send(session_id, "and again")
    assert first.idempotency_key != second.idempotency_key
    assert user_messages(w, session_id)[-2:] == ["and again", "and again"]


async def test_a_crash_between_send_and_mark_does_not_send_twice(
    w: World, launcher: Launcher
) -> None:
    session_id = await start(w, launcher, "first")
    engine = launcher.store.engine
    text = "finish the report"
    # A sender claimed the key, began its send, and died: its lease has already run out...
    claim = rows.claim(
        engine,
        session_id=session_id,
        idempotency_key="crash-1",
        message=text,
        token="dead-sender",
        now=utcnow(),
        lease=timedelta(minutes=5),
    )
    assert rows.begin_send(
        engine,
        claim.row.id,
        "dead-sender",
        now=utcnow(),
        lease=timedelta(0),
        deadline=None,
        allowance_seconds=None,
    )
    # ...after its message reached the session, before it could record so.
    landed = w.sync_client().beta.sessions.events.send(
        session_id, events=[{"type": "user.message", "content": [{"type": "text", "text": text}]}]
    )
    assert landed.data is not None
    sends_before = w.emu.requests["POST /v1/sessions/{id}/events"]

    retried = await launcher.send(session_id, text, idempotency_key="crash-1")
    assert (retried.new, retried.recovered, retried.event_id) == (False, True, landed.data[0].id)
    assert user_messages(w, session_id).count(text) == 1
    assert w.emu.requests["POST /v1/sessions/{id}/events"] == sends_before
    row = rows.get(engine, session_id, "crash-1")
    assert row is not None
    assert (row.state, row.event_id) == (FollowUpState.SENT, landed.data[0].id)
    # And from then on the key is simply done.
    assert not (await launcher.send(session_id, text, idempotency_key="crash-1")).new


async def test_a_crash_before_the_send_landed_sends_it_once(w: World, launcher: Launcher) -> None:
    session_id = await start(w, launcher, "first")
    engine = launcher.store.engine
    # Another key already delivered the same words: that message is not taken for ours.
    await launcher.send(session_id, "continue", idempotency_key="earlier")
    claim = rows.claim(
        engine,
        session_id=session_id,
        idempotency_key="crash-2",
        message="continue",
        token="dead-sender",
        now=utcnow(),
        lease=timedelta(minutes=5),
    )
    rows.begin_send(
        engine,
        claim.row.id,
        "dead-sender",
        now=utcnow(),
        lease=timedelta(0),
        deadline=None,
        allowance_seconds=None,
    )
    idle(w, session_id)
    retried = await launcher.send(session_id, "continue", idempotency_key="crash-2")
    assert retried.new
    assert not retried.recovered
    assert user_messages(w, session_id).count("continue") == 2


async def test_the_deadline_is_rearmed_and_the_reap_marks_cleared(
    w: World, launcher: Launcher
) -> None:
    session_id = await start(w, launcher, "first", deadline="2h")
    created = w.sync_client().beta.sessions.retrieve(session_id).created_at
    allowance = deadline_of(w, session_id) - created  # type: ignore[operator]
    sessions = SessionStore(launcher.store.engine)
    # The watchdog had interrupted it and handed it to the reaper.
    sessions.record_interrupt(session_id, "x", utcnow())
    sessions.request_reap([session_id], utcnow())
    updates = w.emu.requests[UPDATE]

    before = datetime.now(UTC)
    sent = await launcher.send(session_id, "next")
    assert near(sent.deadline, before + allowance)
    assert deadline_of(w, session_id) == sent.deadline.replace(microsecond=0)  # type: ignore[union-attr]
    assert w.sync_client().beta.sessions.retrieve(session_id).metadata[DEADLINE_KEY] == (
        format_deadline(sent.deadline)  # type: ignore[arg-type]
    )
    assert w.emu.requests[UPDATE] == updates + 1  # one update call
    tracked = sessions.get(session_id)
    assert tracked is not None
    assert tracked.deadline == sent.deadline
    assert tracked.session_metadata[DEADLINE_KEY] == format_deadline(sent.deadline)  # type: ignore[arg-type]
    assert (tracked.reap_requested_at, tracked.interrupted_at, tracked.interrupt_reason) == (
        None,
        None,
        None,
    )

    idle(w, session_id)
    shorter = await launcher.send(session_id, "quick one", deadline="30m")
    assert near(shorter.deadline, datetime.now(UTC) + timedelta(minutes=30))
    idle(w, session_id)
    # The next follow-up keeps the allowance last used: deadline - created_at would have grown.
    kept = await launcher.send(session_id, "another")
    assert near(kept.deadline, datetime.now(UTC) + timedelta(minutes=30))


async def test_no_deadline_no_update_call(w: World, launcher: Launcher) -> None:
    session_id = await start(w, launcher, "first")
    updates = w.emu.requests[UPDATE]
    sent = await launcher.send(session_id, "next")
    assert sent.deadline is None
    assert w.emu.requests[UPDATE] == updates
    assert deadline_of(w, session_id) is None


async def test_a_running_session_takes_the_message_queued(w: World, launcher: Launcher) -> None:
    request = LaunchRequest(
        agent=w.agent_id,
        environment=w.limited_env,
        message="slow",
        metadata={"emulator_run_seconds": "3000"},
    )
    result = await launcher.start(request)
    assert result.session_id is not None
    assert w.sync_client().beta.sessions.retrieve(result.session_id).status == "running"
    sent = await launcher.send(result.session_id, "also this")
    assert sent.new
    assert user_messages(w, result.session_id) == ["slow", "also this"]


async def test_sessions_that_cannot_take_a_message_are_refused(
    w: World, launcher: Launcher
) -> None:
    client = w.sync_client()
    terminated = await start(w, launcher, "#script:terminate")
    assert client.beta.sessions.retrieve(terminated).status == "terminated"
    with pytest.raises(SessionClosed, match="is terminated"):
        await launcher.send(terminated, "hello?")

    archived = await start(w, launcher, "first")
    client.beta.sessions.archive(archived)
    with pytest.raises(SessionClosed, match="is archived"):
        await launcher.send(archived, "hello?")

    paused = await start(w, launcher, "#script:budget_reached")
    with pytest.raises(SessionClosed, match="paused on its budget"):
        await launcher.send(paused, "hello?", idempotency_key="paused-1")
    # Refused, so nothing is in doubt: the same key may be tried again later.
    row = rows.get(launcher.store.engine, paused, "paused-1")
    assert row is not None
    assert row.state == FollowUpState.RECORDED

    deleted = await start(w, launcher, "first")
    client.beta.sessions.delete(deleted)
    SessionStore(launcher.store.engine).mark_deleted(deleted, utcnow())
    with pytest.raises(SessionClosed, match="was deleted"):
        await launcher.send(deleted, "hello?")

    with pytest.raises(NoSession, match="no session sesn_nope"):
        await launcher.send("sesn_nope", "hello?")
    with pytest.raises(InvalidFollowUp, match="message: must not be blank"):
        await launcher.send(terminated, "  ")
    for session_id in (terminated, archived, paused):
        assert "hello?" not in user_messages(w, session_id)


# --- POST /sessions/{id}/messages -------------------------------------------------------------


@pytest.fixture
def api(sqlite_url: str) -> Iterator[tuple[World, str, Launcher]]:
    with (
        world(speed=50.0, run_seconds=2.0) as w,
        launcher_for(w, sqlite_url, owner="api") as launcher,
    ):
        app = Starlette(routes=followup_routes(launcher, SecretStr(TOKEN)))
        with serve(app) as url:
            yield w, url, launcher


def launched(w: World, text: str = "first") -> str:
    """A session started straight through the SDK (not tracked: follow-ups still work)."""
    session = w.sync_client().beta.sessions.create(
        agent=w.agent_id,
        environment_id=w.limited_env,
        initial_events=[{"type": "user.message", "content": [{"type": "text", "text": text}]}],
    )
    idle(w, session.id)
    return session.id


def post(url: str, session_id: str, body: Any, headers: dict[str, str] = AUTH) -> httpx.Response:
    return httpx.post(f"{url}/sessions/{session_id}/messages", json=body, headers=headers)


@pytest.mark.parametrize("headers", [{}, {"authorization": "Bearer wrong"}, {"x-api-key": TOKEN}])
def test_a_follow_up_needs_the_token(api: Any, headers: dict[str, str]) -> None:
    w, url, _ = api
    session_id = launched(w)
    assert post(url, session_id, {"message": "hi"}, headers).status_code == 401
    assert user_messages(w, session_id) == ["first"]


def test_201_then_200_for_the_same_key(api: Any) -> None:
    w, url, _ = api
    session_id = launched(w)
    body = {"message": "go on", "idempotency_key": "hook-7", "deadline": "1h"}
    first = post(url, session_id, body)
    assert first.status_code == 201, first.text
    sent = first.json()
    assert sent["session_id"] == session_id
    assert sent["idempotency_key"] == "hook-7"
    assert sent["event_id"].startswith("sevt_")
    assert sent["new"] is True
    assert near(datetime.fromisoformat(sent["deadline"]), datetime.now(UTC) + timedelta(hours=1))
    again = post(url, session_id, body)
    assert again.status_code == 200
    assert again.json()["event_id"] == sent["event_id"]
    assert again.json()["new"] is False
    assert user_messages(w, session_id) == ["first", "go on"]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({}, "message: required"),
        ({"message": ""}, "message"),
        ({"message": 3}, "message"),
        ({"message": "hi", "deadline": "later"}, "bad duration 'later'"),
        ({"message": "hi", "deadline": "0s"}, "must be longer than 0s"),
        ({"message": "hi", "idempotency_key": "k" * 300}, "idempotency_key"),
        ({"message": "hi", "queue": True}, "queue: unknown field"),
        ([1, 2], "must be a JSON object"),
    ],
)
def test_bad_input_is_a_400_with_a_clear_message(api: Any, body: Any, message: str) -> None:
    w, url, _ = api
    session_id = launched(w)
    response = post(url, session_id, body)
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_request"
    assert message in response.json()["message"]
    assert user_messages(w, session_id) == ["first"]


def test_not_json_and_bad_ids_are_400s(api: Any) -> None:
    w, url, _ = api
    session_id = launched(w)
    raw = httpx.post(f"{url}/sessions/{session_id}/messages", content=b"{no", headers=AUTH)
    assert raw.status_code == 400
    assert "not valid JSON" in raw.json()["message"]
    bad = post(url, "sesn%20x", {"message": "hi"})
    assert bad.status_code == 400
    assert "is not a session id" in bad.json()["message"]


def test_unknown_is_404_and_closed_or_conflicting_is_409(api: Any) -> None:
    w, url, _ = api
    missing = post(url, "sesn_missing", {"message": "hi"})
    assert missing.status_code == 404
    assert missing.json() == {"error": "not_found", "message": "no session sesn_missing"}

    session_id = launched(w)
    w.sync_client().beta.sessions.archive(session_id)
    closed = post(url, session_id, {"message": "hi"})
    assert closed.status_code == 409
    assert closed.json()["error"] == "session_closed"
    assert "is archived" in closed.json()["message"]

    open_one = launched(w)
    assert post(url, open_one, {"message": "a", "idempotency_key": "k"}).status_code == 201
    conflict = post(url, open_one, {"message": "b", "idempotency_key": "k"})
    assert conflict.status_code == 409
    assert conflict.json()["error"] == "idempotency_conflict"


# --- idlehook send ----------------------------------------------------------------------------


@pytest.fixture
def config(tmp_path: Path, sqlite_url: str, w: World) -> Path:
    path = tmp_path / "idlehook.toml"
    path.write_text(
        f'database_url = "{sqlite_url}"\n'
        f'base_url = "{w.url}"\n'
        f'api_key = "{API_KEY}"\n'
        'owner = "cli-followups"\n'
    )
    return path


def run(config: Path, *args: str) -> int:
    return main(["--config", str(config), *args])


def test_send_prints_the_event_id_and_a_repeat_sends_nothing(
    w: World, config: Path, capsys: Any
) -> None:
    session_id = launched(w)
    capsys.readouterr()  # the emulator's own log lines, printed before the CLI took over logging
    assert run(config, "send", session_id, "--message", "go on", "--idempotency-key", "c1") == 0
    event_id = capsys.readouterr().out.strip()
    assert event_id.startswith("sevt_")
    code = run(
        config, "send", session_id, "--message", "go on", "--idempotency-key", "c1", "--json"
    )
    assert code == 0
    captured = capsys.readouterr()
    again = json.loads(captured.out)
    assert (again["event_id"], again["new"]) == (event_id, False)
    assert run(config, "send", session_id, "--message", "go on", "--idempotency-key", "c1") == 0
    assert "already sent with idempotency key c1: nothing new sent" in capsys.readouterr().err
    assert user_messages(w, session_id) == ["first", "go on"]


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--message", ""], "message: String should have at least 1 character"),
        (["--message", "hi", "--deadline", "tomorrow"], "bad duration 'tomorrow'"),
    ],
)
def test_send_bad_flags_fail_clearly(
    w: World, config: Path, capsys: Any, flags: list[str], message: str
) -> None:
    session_id = launched(w)
    assert run(config, "send", session_id, *flags) == 1
    assert message in capsys.readouterr().err
    assert user_messages(w, session_id) == ["first"]


def test_send_to_a_terminated_session_fails_clearly(w: World, config: Path, capsys: Any) -> None:
    session_id = launched(w, "#script:terminate")
    assert run(config, "send", session_id, "--message", "hello?") == 1
    assert f"error: session {session_id} is terminated" in capsys.readouterr().err
    assert run(config, "send", "sesn_nope", "--message", "hello?") == 1
    assert "error: no session sesn_nope" in capsys.readouterr().err


def test_every_refusal_is_a_follow_up_error() -> None:
    for cls in (InvalidFollowUp, KeyConflict, SessionClosed, NoSession):
        assert issubclass(cls, FollowUpError)
