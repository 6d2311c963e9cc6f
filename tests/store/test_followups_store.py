"""store/followups.py on SQLite and PostgreSQL: one send per (session, key), across claimers."""

import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy.engine import Engine

from store import followups as rows
from store.engine import make_engine
from store.followups import Next
from store.models import FollowUpState
from store.sessions import SessionStore, SessionUpdate

T0 = datetime(2026, 12, 3, 12, 0, tzinfo=UTC)
LEASE = timedelta(minutes=5)


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:
    engine = make_engine(db_url, pool_size=8)
    yield engine
    engine.dispose()


def claim(engine: Engine, token: str, *, message: str = "go on", now: datetime = T0) -> rows.Claim:
    return rows.claim(
        engine,
        session_id="sesn_1",
        idempotency_key="key-1",
        message=message,
        token=token,
        now=now,
        lease=LEASE,
    )


def begin(engine: Engine, row_id: int, token: str, *, lease: timedelta = LEASE) -> bool:
    return rows.begin_send(
        engine, row_id, token, now=T0, lease=lease, deadline=None, allowance_seconds=None
    )


def test_the_first_claimer_sends_the_others_wait_or_are_told(engine: Engine) -> None:
    first = claim(engine, "a")
    assert first.next is Next.SEND
    assert first.row.state == FollowUpState.RECORDED
    assert claim(engine, "b").next is Next.BUSY  # a's claim is live
    assert claim(engine, "b", message="something else").next is Next.CONFLICT

    assert begin(engine, first.row.id, "a")
    assert rows.mark_sent(engine, first.row.id, "a", session_id="sesn_1", event_id="sevt_1", now=T0)
    done = claim(engine, "c", now=T0 + timedelta(days=1))
    assert done.next is Next.DONE
    assert (done.row.event_id, done.row.attempts) == ("sevt_1", 1)
    # The key belongs to its session: another session may use it for its own message.
    other = rows.claim(
        engine,
        session_id="sesn_2",
        idempotency_key="key-1",
        message="go on",
        token="d",
        now=T0,
        lease=LEASE,
    )
    assert other.next is Next.SEND


def test_a_sender_that_died_mid_send_leaves_the_outcome_to_be_looked_for(engine: Engine) -> None:
    dead = claim(engine, "dead")
    assert begin(engine, dead.row.id, "dead")
    # Its lease still runs: nobody may assume anything yet.
    assert claim(engine, "b", now=T0 + timedelta(minutes=1)).next is Next.BUSY
    later = T0 + LEASE + timedelta(seconds=1)
    taken = claim(engine, "b", now=later)
    assert taken.next is Next.RECOVER
    assert taken.row.first_attempt_at == T0
    # The dead sender comes back: fenced out of every write.
    assert not rows.mark_sent(
        engine, dead.row.id, "dead", session_id="sesn_1", event_id="sevt_x", now=later
    )
    assert not rows.release(
        engine, dead.row.id, "dead", now=later, error="x", outcome_unknown=False
    )
    assert rows.get(engine, "sesn_1", "key-1").owner == "b"  # type: ignore[union-attr]


def test_a_refused_send_can_be_tried_again_without_looking(engine: Engine) -> None:
    first = claim(engine, "a")
    assert begin(engine, first.row.id, "a")
    assert rows.release(
        engine, first.row.id, "a", now=T0, error="paused on its budget", outcome_unknown=False
    )
    again = claim(engine, "b", now=T0)
    assert again.next is Next.SEND  # released: nobody holds it, and nothing reached the API
    assert again.row.error == "paused on its budget"
    assert begin(engine, again.row.id, "b")
    assert rows.release(engine, again.row.id, "b", now=T0, error="timeout", outcome_unknown=True)
    assert claim(engine, "c", now=T0).next is Next.RECOVER


def test_sent_clears_the_tracked_sessions_reap_and_interrupt_marks(engine: Engine) -> None:
    sessions = SessionStore(engine)
    sessions.record("sesn_1", SessionUpdate(status="idle"), T0)
    sessions.record_interrupt("sesn_1", "past_deadline", T0)
    sessions.request_reap(["sesn_1"], T0)
    first = claim(engine, "a")
    assert begin(engine, first.row.id, "a")
    sessions.rearm(
        "sesn_1",
        deadline=T0 + timedelta(hours=2),
        metadata={"idlehook_deadline": "2026-12-03T14:00:00Z"},
        now=T0,
    )
    assert rows.mark_sent(engine, first.row.id, "a", session_id="sesn_1", event_id="e1", now=T0)
    tracked = sessions.get("sesn_1")
    assert tracked is not None
    assert (tracked.reap_requested_at, tracked.interrupted_at, tracked.interrupt_reason) == (
        None,
        None,
        None,
    )
    assert tracked.deadline == T0 + timedelta(hours=2)
    assert tracked.session_metadata == {"idlehook_deadline": "2026-12-03T14:00:00Z"}
    assert tracked.status == "idle"  # the webhooks say when it runs
    # A session we do not track stays untracked.
    sessions.rearm("sesn_other", deadline=T0, metadata=None, now=T0)
    assert sessions.get("sesn_other") is None


def test_allowance_and_sent_ids_per_session(engine: Engine) -> None:
    assert rows.latest_allowance(engine, "sesn_1") is None
    first = claim(engine, "a")
    assert rows.begin_send(
        engine, first.row.id, "a", now=T0, lease=LEASE, deadline=T0, allowance_seconds=1800.0
    )
    assert rows.mark_sent(engine, first.row.id, "a", session_id="sesn_1", event_id="e1", now=T0)
    assert rows.latest_allowance(engine, "sesn_1") == 1800.0
    assert rows.latest_allowance(engine, "sesn_2") is None
    assert rows.sent_event_ids(engine, "sesn_1") == {"e1"}
    assert [r.idempotency_key for r in rows.for_session(engine, "sesn_1")] == ["key-1"]


def test_racing_claimers_one_sends(engine: Engine) -> None:
    results: list[Next] = []
    barrier = threading.Barrier(8)

    def race(token: str) -> None:
        barrier.wait()
        results.append(claim(engine, token).next)

    threads = [threading.Thread(target=race, args=(f"t{i}",)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == sorted([Next.SEND] + [Next.BUSY] * 7)
