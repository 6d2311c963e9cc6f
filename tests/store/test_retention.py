"""Retention on SQLite and PostgreSQL: only what is old AND finished goes, in short batches."""

import json
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from store import watch
from store.engine import make_engine
from store.ingest import NewDelivery, write_batch
from store.models import (
    Approval,
    Delivery,
    FollowUp,
    HandlerRun,
    Launch,
    ReaperAction,
    ToolCall,
    TrackedSession,
    UnrecognisedDelivery,
)
from store.retention import FLOOR, KINDS, RetentionPolicy, cutoffs, prune

NOW = datetime.now(UTC).replace(microsecond=0)
OLD = NOW - timedelta(days=40)
STATUS = frozenset(
    {
        "session.status_idled",
        "session.idled",
        "session.status_run_started",
        "session.running",
        "session.status_terminated",
    }
)
REST = frozenset({"session.status_idled", "session.idled", "session.status_terminated"})
DAYS_30 = {kind: timedelta(days=30) for kind in KINDS} | {
    "dead_runs": timedelta(days=90),
    "audit": timedelta(days=365),
}

_t = {
    "deliveries": Delivery.__table__,  # type: ignore[attr-defined]
    "handler_runs": HandlerRun.__table__,  # type: ignore[attr-defined]
    "tracked_sessions": TrackedSession.__table__,  # type: ignore[attr-defined]
    "launches": Launch.__table__,  # type: ignore[attr-defined]
    "tool_calls": ToolCall.__table__,  # type: ignore[attr-defined]
    "approvals": Approval.__table__,  # type: ignore[attr-defined]
    "follow_ups": FollowUp.__table__,  # type: ignore[attr-defined]
    "reaper_actions": ReaperAction.__table__,  # type: ignore[attr-defined]
    "unrecognised_deliveries": UnrecognisedDelivery.__table__,  # type: ignore[attr-defined]
}


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:
    engine = make_engine(db_url, pool_size=2)
    yield engine
    engine.dispose()


def policy(
    ages: Mapping[str, timedelta | None] | None = None, batch: int = 5000
) -> RetentionPolicy:
    return RetentionPolicy(ages=ages or DAYS_30, status_types=STATUS, batch_size=batch)


def insert(engine: Engine, table: str, **values: Any) -> Any:
    t = _t[table]
    with engine.begin() as conn:
        key = conn.execute(t.insert().values(**values)).inserted_primary_key
        assert key is not None
        return key[0]


def delivery(
    engine: Engine,
    name: str,
    at: datetime,
    *runs: tuple[str, str, datetime | None],
    session: str | None = "sesn_x",
    event_type: str = "session.status_idled",
    duplicate_at: datetime | None = None,
) -> int:
    """A delivery received at `at` with runs (handler, state, finished_at)."""
    delivery_id = insert(
        engine,
        "deliveries",
        event_id=name,
        event_type=event_type,
        resource_id=session or "x",
        session_id=session,
        event_created_at=at,
        received_at=at,
        source="webhook",
        body=json.dumps({"id": name}),
        headers={},
        duplicates=1 if duplicate_at else 0,
        last_duplicate_at=duplicate_at,
    )
    for position, (handler, state, finished) in enumerate(runs):
        insert(
            engine,
            "handler_runs",
            delivery_id=delivery_id,
            lane=session or f"delivery:{name}",
            position=position,
            handler=handler,
            state=state,
            attempts=1,
            next_attempt_at=finished or at,
            created_at=at,
            updated_at=finished or at,
            finished_at=finished,
        )
    return int(delivery_id)


def tracked(engine: Engine, session: str, deleted_at: datetime | None = None) -> None:
    insert(
        engine,
        "tracked_sessions",
        id=session,
        first_seen_at=OLD - timedelta(days=1),
        updated_at=OLD,
        deleted_at=deleted_at,
        metadata={},
        launched_by_us=True,
        status="idle",
    )


def event_ids(engine: Engine) -> set[str]:
    with engine.connect() as conn:
        return set(conn.execute(sa.select(_t["deliveries"].c.event_id)).scalars())


def count(engine: Engine, table: str) -> int:
    with engine.connect() as conn:
        return int(conn.execute(sa.select(sa.func.count()).select_from(_t[table])).scalar_one())


def column(engine: Engine, table: str, name: str) -> set[Any]:
    with engine.connect() as conn:
        return set(conn.execute(sa.select(_t[table].c[name])).scalars())


DONE = ("_route", "succeeded", OLD)


def test_cutoffs_never_go_under_the_floor() -> None:
    short = {kind: timedelta(seconds=1) for kind in KINDS} | {"audit": None}
    cuts = cutoffs(policy(short), NOW)
    assert cuts["deliveries"] == NOW - FLOOR
    assert cuts["audit"] is None  # kept forever
    assert cutoffs(policy(), NOW)["dead_runs"] == NOW - timedelta(days=90)


def test_deliveries_and_runs_go_only_when_old_and_finished(engine: Engine) -> None:
    tracked(engine, "sesn_gone", deleted_at=OLD)
    tracked(engine, "sesn_x")
    tracked(engine, "sesn_held", deleted_at=OLD)
    # Old and finished, of a deleted session: goes, runs and all.
    delivery(engine, "old_done", OLD, DONE, ("archive", "succeeded", OLD), session="sesn_gone")
    # Old, but a run is pending / waiting for a retry: the delivery and all its runs stay.
    delivery(engine, "old_pending", OLD, DONE, ("archive", "pending", None), session="sesn_held")
    delivery(engine, "old_retrying", OLD, DONE, ("log", "failed", None), session="sesn_held")
    # Dead letters are replayable until their own age (90 days).
    delivery(engine, "dead_40d", OLD, DONE, ("log", "dead", OLD), session="sesn_gone")
    old_dead = NOW - timedelta(days=100)
    delivery(engine, "dead_100d", old_dead, DONE, ("log", "dead", old_dead), session="sesn_gone")
    # Young, or re-sent lately (Anthropic may still be retrying it): stays.
    young = NOW - timedelta(hours=2)
    delivery(engine, "young", young, ("_route", "succeeded", young), session="sesn_gone")
    delivery(engine, "resent", OLD, DONE, session="sesn_gone", duplicate_at=young)
    # A run finished lately keeps its old delivery (each goes by its own age).
    delivery(engine, "late_run", OLD, ("_route", "succeeded", young), session="sesn_gone")

    report = prune(engine, policy(), NOW)

    assert event_ids(engine) == {
        "old_pending",
        "old_retrying",
        "dead_40d",
        "young",
        "resent",
        "late_run",
    }
    assert report.deleted["deliveries"] == 2
    states = column(engine, "handler_runs", "state")
    assert {"pending", "failed", "dead"} <= states
    with engine.connect() as conn:
        runs = _t["handler_runs"]
        kept = conn.execute(
            sa.select(sa.func.count()).where(
                runs.c.delivery_id.in_(
                    sa.select(_t["deliveries"].c.id).where(
                        _t["deliveries"].c.event_id.in_(["old_pending", "old_retrying"])
                    )
                )
            )
        ).scalar_one()
    assert kept == 4  # the succeeded _route of each stays beside its unfinished sibling
    # "dead_40d": its dead letter stays (90 d), and with it its succeeded _route (a replay
    # re-routes from it) and its delivery: a delivery's runs go together.
    assert report.deleted["handler_runs"] == 2 + 0 + 2 + 1  # old_done, dead_40d, dead_100d, resent
    # A deleted session goes once none of its deliveries is left; "sesn_held" still has some.
    assert column(engine, "tracked_sessions", "id") >= {"sesn_x", "sesn_held"}


def test_what_a_sessions_state_is_read_from_stays(engine: Engine) -> None:
    tracked(engine, "sesn_live")
    day = timedelta(days=1)
    delivery(
        engine,
        "run_1",
        OLD - 3 * day,
        DONE,
        session="sesn_live",
        event_type="session.status_run_started",
    )
    delivery(engine, "idle_1", OLD - 2 * day, DONE, session="sesn_live")
    delivery(
        engine,
        "run_2",
        OLD - day,
        DONE,
        session="sesn_live",
        event_type="session.status_run_started",
    )
    delivery(engine, "idle_2", OLD, DONE, session="sesn_live")
    delivery(engine, "other", OLD, DONE, session="sesn_live", event_type="session.outcome")
    # Never tracked (the reconciler's scan asks whether any status delivery is stored).
    delivery(engine, "untracked_idle", OLD, DONE, session="sesn_stranger")
    before = watch.watched(engine, status_types=STATUS, quiet_types=REST)

    prune(engine, policy(), NOW)

    # The newest of each status type stays; superseded ones and non-status ones go.
    assert event_ids(engine) == {"run_2", "idle_2", "untracked_idle"}
    after = watch.watched(engine, status_types=STATUS, quiet_types=REST)
    assert [(w.id, w.settled, w.last_status_type) for w in after] == [
        (w.id, w.settled, w.last_status_type) for w in before
    ]
    assert after[0].settled
    assert watch.with_status_deliveries(engine, ["sesn_stranger"], STATUS) == {"sesn_stranger"}
    assert count(engine, "handler_runs") == 0  # runs are not what the state is read from


def test_everything_else_goes_only_when_finished(engine: Engine) -> None:
    tracked(engine, "sesn_live")
    tracked(engine, "sesn_busy")
    tracked(engine, "sesn_gone", deleted_at=OLD)
    later = OLD + timedelta(hours=1)
    for key, state in (
        ("l_created", "created"),
        ("l_failed", "failed"),
        ("l_queued", "queued"),
        ("l_creating", "creating"),
    ):
        done = state in ("created", "failed")
        insert(
            engine,
            "launches",
            idempotency_key=key,
            request={},
            state=state,
            attempts=1,
            next_attempt_at=OLD,
            created_at=OLD,
            updated_at=OLD,
            finished_at=OLD if done else None,
            warnings=[],
        )
    for use_id, session, state, sent in (
        ("tu_old", "sesn_live", "sent", OLD),
        ("tu_last", "sesn_live", "sent", later),  # the last one sent woke the session: stays
        ("tu_started", "sesn_live", "started", None),
        ("tu_gone", "sesn_gone", "sent", OLD),
    ):
        insert(
            engine,
            "tool_calls",
            custom_tool_use_id=use_id,
            session_id=session,
            tool_name="t",
            input={},
            state=state,
            started_at=OLD,
            sent_at=sent,
        )
    for use_id, session, state, sent in (
        ("ap_pending", "sesn_gone", "pending", None),
        ("ap_decided", "sesn_gone", "decided", None),
        ("ap_sent", "sesn_gone", "sent", OLD),
    ):
        insert(
            engine,
            "approvals",
            tool_use_id=use_id,
            session_id=session,
            tool_name="t",
            input={},
            state=state,
            requested_at=OLD,
            sent_at=sent,
        )
    for key, session, state, sent in (
        ("f_old", "sesn_live", "sent", OLD),
        ("f_last", "sesn_live", "sent", later),
        ("f_recorded", "sesn_gone", "recorded", None),
        ("f_gone", "sesn_gone", "sent", OLD),
        ("f_b1", "sesn_busy", "sent", OLD),
        ("f_b2", "sesn_busy", "sent", later),
        ("f_b3", "sesn_busy", "sending", None),
    ):
        insert(
            engine,
            "follow_ups",
            session_id=session,
            idempotency_key=key,
            message="m",
            state=state,
            created_at=OLD,
            updated_at=OLD,
            sent_at=sent,
        )
    for days in (400, 100):
        insert(
            engine,
            "reaper_actions",
            run_id=f"r{days}",
            session_id="s",
            action="deleted",
            reason="idle",
            at=NOW - timedelta(days=days),
        )
    for name, at in (("u_old", OLD), ("u_young", NOW - timedelta(hours=3))):
        insert(
            engine,
            "unrecognised_deliveries",
            message_id=name,
            reason="body_not_json",
            received_at=at,
            body=b"x",
            headers={},
        )

    report = prune(engine, policy(), NOW)

    assert column(engine, "launches", "idempotency_key") == {"l_queued", "l_creating"}
    assert column(engine, "tool_calls", "custom_tool_use_id") == {"tu_last", "tu_started"}
    assert column(engine, "approvals", "tool_use_id") == {"ap_pending", "ap_decided"}
    # Not sent: stays; and while one is not sent, every follow-up of a live session stays.
    assert column(engine, "follow_ups", "idempotency_key") == {
        "f_last",
        "f_recorded",
        "f_b1",
        "f_b2",
        "f_b3",
    }
    assert column(engine, "reaper_actions", "run_id") == {"r100"}
    assert column(engine, "unrecognised_deliveries", "message_id") == {"u_young"}
    # sesn_gone had nothing left.
    assert column(engine, "tracked_sessions", "id") == {"sesn_live", "sesn_busy"}
    assert report.deleted["tracked_sessions"] == 1


def test_deletes_in_batches(engine: Engine) -> None:
    tracked(engine, "sesn_gone", deleted_at=OLD)
    for n in range(7):
        delivery(engine, f"d{n}", OLD + timedelta(seconds=n), DONE, session="sesn_gone")
    delivery(engine, "young", NOW - timedelta(hours=1), DONE, session="sesn_gone")
    deletes: list[int] = []

    def record(conn: Any, cursor: Any, statement: str, *_: Any) -> None:
        if statement.lstrip().upper().startswith("DELETE FROM DELIVERIES"):
            deletes.append(cursor.rowcount)

    sa.event.listen(engine, "after_cursor_execute", record)
    try:
        report = prune(engine, policy(batch=3), NOW)
    finally:
        sa.event.remove(engine, "after_cursor_execute", record)

    assert event_ids(engine) == {"young"}
    assert deletes == [3, 3, 1]  # one transaction each, never more than the batch
    assert report.deleted["deliveries"] == 7


def test_dry_run_counts_and_deletes_nothing(engine: Engine) -> None:
    tracked(engine, "sesn_gone", deleted_at=OLD)
    delivery(engine, "a", OLD, DONE, ("archive", "succeeded", OLD), session="sesn_gone")
    delivery(engine, "b", OLD, ("_route", "pending", None), session="sesn_gone")
    insert(
        engine,
        "reaper_actions",
        run_id="r",
        session_id="s",
        action="deleted",
        reason="idle",
        at=NOW - timedelta(days=400),
    )

    dry = prune(engine, policy(), NOW, dry_run=True)

    assert event_ids(engine) == {"a", "b"}
    assert count(engine, "handler_runs") == 3
    assert count(engine, "reaper_actions") == 1
    assert dry.dry_run
    expected = {"handler_runs": 2, "deliveries": 1, "reaper_actions": 1}
    assert {k: v for k, v in dry.deleted.items() if v} == expected
    real = prune(engine, policy(), NOW)
    assert real.deleted == dry.deleted
    assert event_ids(engine) == {"b"}


def test_a_delivery_resent_after_pruning_inside_the_floor_is_still_deduplicated(
    engine: Engine,
) -> None:
    def new(event_id: str, at: datetime) -> NewDelivery:
        return NewDelivery(
            event_id=event_id,
            event_type="session.status_idled",
            resource_id="sesn_gone",
            session_id="sesn_gone",
            event_created_at=at,
            received_at=at,
            body="{}",
        )

    tracked(engine, "sesn_gone", deleted_at=OLD)
    at = NOW - timedelta(hours=23)
    [first] = write_batch(engine, [new("wevt_retry", at)], at)
    assert first.new
    with engine.begin() as conn:
        runs = _t["handler_runs"]
        conn.execute(runs.update().values(state="succeeded", finished_at=at, updated_at=at))

    # Asked for less than the floor: the floor wins.
    shortest = {kind: timedelta(seconds=1) for kind in KINDS}
    prune(engine, policy(shortest), NOW)
    [again] = write_batch(engine, [new("wevt_retry", NOW)], NOW)

    assert not again.new
    assert again.delivery_id == first.delivery_id
    assert count(engine, "handler_runs") == 1  # no second routing run
    # Once past the floor (and re-sent meanwhile: it counts from the last copy), it may go.
    prune(engine, policy(shortest), NOW + timedelta(hours=2))
    assert event_ids(engine) == {"wevt_retry"}
    prune(engine, policy(shortest), NOW + FLOOR + timedelta(seconds=1))
    assert event_ids(engine) == set()
