"""store/sessions.py, the one writer of `tracked_sessions`: its named operations and the rules
they share (status_at, the first delete, a racing insert), on both engines."""

import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from store import sessions as tracked
from store.engine import make_engine
from store.launches import LaunchStore, NewLaunch
from store.sessions import Launched, SessionStore, SessionUpdate
from tests.support.servers import wait_for

T0 = datetime(2026, 12, 2, 12, 0, tzinfo=UTC)
S = timedelta(seconds=1)


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:
    engine = make_engine(db_url, pool_size=3)
    yield engine
    engine.dispose()


def api_session(status: str = "idle", **over: object) -> SimpleNamespace:
    """Shaped like the SDK's BetaManagedAgentsSession, as far as from_api reads it."""
    fields: dict[str, object] = {
        "id": "sesn_1",
        "status": status,
        "agent": SimpleNamespace(id="agent_1", version=3),
        "environment_id": "env_1",
        "deployment_id": None,
        "title": "a title",
        "metadata": {"idlehook_owner": "t"},
        "created_at": datetime(2026, 12, 2, 11, 0),  # naive: the store takes it as UTC
        "usage": SimpleNamespace(active_seconds=12),
    }
    return SimpleNamespace(**{**fields, **over})


def test_from_api_copies_the_session_and_only_keeps_what_is_asked() -> None:
    update = SessionUpdate.from_api(
        api_session(), stop_reason="end_turn", cost_usd=0.5, token_usd=0.25, webhook_at=T0
    )
    assert update == SessionUpdate(
        status="idle",
        stop_reason="end_turn",
        agent_id="agent_1",
        agent_version=3,
        environment_id="env_1",
        title="a title",
        metadata={"idlehook_owner": "t"},
        created_at=datetime(2026, 12, 2, 11, 0, tzinfo=UTC),
        active_seconds=12.0,
        cost_usd=0.5,
        token_usd=0.25,
        webhook_at=T0,
    )
    assert update.only("status", "token_usd") == SessionUpdate(status="idle", token_usd=0.25)
    assert update.columns()["last_webhook_at"] == T0  # the column's name, not the field's


def test_status_at_moves_only_when_the_status_changes(engine: Engine) -> None:
    store = SessionStore(engine)
    store.record("sesn_1", SessionUpdate(status="running"), T0)
    store.record("sesn_1", SessionUpdate(status="running", title="x"), T0 + S)
    row = store.get("sesn_1")
    assert row is not None
    assert (row.status_at, row.updated_at, row.first_seen_at) == (T0, T0 + S, T0)
    assert store.record_poll("sesn_1", SessionUpdate(status="idle"), T0 + 2 * S)
    row = store.get("sesn_1")
    assert row is not None
    assert (row.status, row.status_at, row.polled_at) == ("idle", T0 + 2 * S, T0 + 2 * S)
    assert row.title == "x"  # None left it as it was
    # A poll only updates a tracked session.
    assert not store.record_poll("sesn_other", SessionUpdate(status="idle"), T0)
    assert store.get("sesn_other") is None


def test_a_launch_fills_in_an_unknown_status_only(engine: Engine) -> None:
    store, launches = SessionStore(engine), LaunchStore(engine, now=lambda: T0 + S)

    def launch(session_id: str) -> None:
        [(row, _)] = launches.add_many([NewLaunch(session_id, {})])
        [claimed] = launches.claim("w", limit=1, lease=timedelta(minutes=1), only_id=row.id)
        assert claimed.lease_owner is not None
        assert claimed.id is not None
        seen = SessionUpdate.from_api(api_session("rescheduling", id=session_id))
        launched = Launched(session_id, owner="t", route="r", deadline=T0, seen=seen)
        assert launches.complete(claimed.id, claimed.lease_owner, launched)

    # Its webhook won the race: the create response is older news.
    store.record("sesn_raced", SessionUpdate(status="idle"), T0)
    launch("sesn_raced")
    launch("sesn_new")
    raced, new = store.get("sesn_raced"), store.get("sesn_new")
    assert raced is not None
    assert new is not None
    assert (raced.status, raced.status_at, raced.launched_by_us) == ("idle", T0, True)
    assert (raced.owner, raced.route, raced.deadline, raced.agent_version) == ("t", "r", T0, 3)
    assert (new.status, new.status_at, new.first_seen_at) == ("rescheduling", T0 + S, T0 + S)


def test_the_first_delete_stands_and_only_the_reaper_tracks_a_stranger(engine: Engine) -> None:
    store = SessionStore(engine)
    store.record("sesn_1", SessionUpdate(status="idle"), T0)
    store.mark_deleted("sesn_1", T0 + S)
    store.mark("sesn_1", T0 + 2 * S, deleted=True)
    store.record("sesn_1", SessionUpdate(deleted_at=T0 + 3 * S), T0 + 3 * S)
    row = store.get("sesn_1")
    assert row is not None
    assert row.deleted_at == T0 + S
    store.mark_deleted("sesn_stranger", T0)
    assert store.get("sesn_stranger") is None
    store.mark_deleted("sesn_stranger", T0, track_untracked=True)
    stranger = store.get("sesn_stranger")
    assert stranger is not None
    assert (stranger.deleted_at, stranger.launched_by_us) == (T0, False)


def test_reap_requests_interrupts_and_a_new_run(engine: Engine) -> None:
    store = SessionStore(engine)
    store.record("sesn_1", SessionUpdate(status="running"), T0)
    store.record_interrupt("sesn_1", "past_deadline", T0 + S)
    store.request_reap(["sesn_1", "sesn_untracked"], T0 + S)
    store.request_reap(["sesn_1"], T0 + 2 * S)  # the earliest request stands
    row = store.get("sesn_1")
    assert row is not None
    assert (row.interrupted_at, row.interrupt_reason) == (T0 + S, "past_deadline")
    assert row.reap_requested_at == T0 + S
    assert store.get("sesn_untracked") is None
    with engine.begin() as conn:  # as store.followups.mark_sent does, in its own transaction
        tracked.expect_new_run(conn, "sesn_1", T0 + 3 * S)
    row = store.get("sesn_1")
    assert row is not None
    assert (row.interrupted_at, row.interrupt_reason, row.reap_requested_at) == (None,) * 3
    assert row.status == "running"


def test_a_caller_transaction_that_rolls_back_takes_the_write_with_it(engine: Engine) -> None:
    conn = engine.connect()
    try:
        with conn.begin() as transaction:
            tracked.record(conn, "sesn_1", SessionUpdate(status="idle"), T0)
            transaction.rollback()  # the caller's own write failed
    finally:
        conn.close()
    assert SessionStore(engine).get("sesn_1") is None


@pytest.mark.postgres
def test_two_first_writers_make_one_row(postgres_url: str) -> None:
    """The second insert waits on the first's lock, fails on the key, and becomes an update
    inside its own transaction (a savepoint), with the status_at rule applied to the winner."""
    engine = make_engine(postgres_url, pool_size=3)
    store = SessionStore(engine)
    errors: list[BaseException] = []

    def second() -> None:
        try:
            store.record("sesn_1", SessionUpdate(status="idle", title="second"), T0 + S)
        except BaseException as exc:
            errors.append(exc)

    def waiting_on_a_lock() -> bool:
        with engine.connect() as probe:
            query = (
                "select count(*) from pg_stat_activity"
                " where wait_event_type = 'Lock' and datname = current_database()"
            )
            return int(probe.execute(sa.text(query)).scalar_one()) > 0

    try:
        thread = threading.Thread(target=second)
        with engine.begin() as first:
            tracked.record(first, "sesn_1", SessionUpdate(status="running"), T0)
            thread.start()
            wait_for(waiting_on_a_lock, 10)
        thread.join(10)
        assert errors == []
        row = store.get("sesn_1")
        assert row is not None
        assert (row.status, row.status_at, row.title, row.first_seen_at) == (
            "idle",
            T0 + S,
            "second",
            T0,
        )
    finally:
        engine.dispose()
