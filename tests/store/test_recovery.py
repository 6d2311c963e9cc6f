"""Re-routing, replaying and discarding runs (store/runs.py), on SQLite and PostgreSQL."""

from collections.abc import Iterator
from datetime import timedelta

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from store.engine import make_engine
from store.models import HandlerRun, RunState
from store.retention import KINDS, RetentionPolicy, prune
from store.runs import ROUTE_HANDLER, RunStore
from tests.handlers.helpers import Clock, add_delivery

LEASE = timedelta(seconds=30)
_runs = HandlerRun.__table__  # type: ignore[attr-defined]


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:
    engine = make_engine(db_url, pool_size=2)
    yield engine
    engine.dispose()


@pytest.fixture
def store(engine: Engine) -> RunStore:
    return RunStore(engine)


def route(
    store: RunStore, clock: Clock, handlers: list[str], decision: str | None = "matched"
) -> int:
    [run] = store.claim("w", clock.now(), LEASE)
    assert run.handler == ROUTE_HANDLER
    assert store.complete_route(
        run.id, "w", clock.now(), 1.0, handlers, attempt=run.attempts, decision=decision
    )
    return run.id


def finish(store: RunStore, clock: Clock, *, fail: bool = False) -> tuple[int, str]:
    [run] = store.claim("w", clock.now(), LEASE)
    if fail:
        store.fail(run.id, "w", clock.now(), "boom", None, 1.0, attempt=run.attempts)
    else:
        store.succeed(run.id, "w", clock.now(), 1.0, attempt=run.attempts)
    return run.id, run.handler


def table(store: RunStore, delivery: int) -> list[tuple[str, int, int, str]]:
    return [
        (r.handler, r.generation, r.position, r.state) for r in store.runs_for_delivery(delivery)
    ]


def test_reroute_runs_only_what_did_not_succeed_and_supersedes_the_dead(
    store: RunStore, engine: Engine
) -> None:
    clock = Clock()
    delivery = add_delivery(engine, session_id="sesn_a", now=clock.now())
    route(store, clock, ["archive", "forward"])
    finish(store, clock)  # archive succeeds
    dead_id, _ = finish(store, clock, fail=True)  # forward dies

    [done] = store.reroute([delivery], clock.now(), by="test")
    assert (done.outcome, done.decision, done.superseded) == ("rerouted", "matched", (dead_id,))
    assert done.runs == ("archive:succeeded", "forward:dead")
    dead = store.get(dead_id)
    assert (dead.state, dead.superseded_by, dead.resolved_by) == (
        "superseded",
        done.route_run_id,
        "test",
    )

    # The new routing names both again (and one the old one did not): archive is done.
    route(store, clock, ["archive", "forward", "log"])
    assert table(store, delivery) == [
        ("_route", 0, 0, "succeeded"),
        ("archive", 0, 1, "succeeded"),
        ("forward", 0, 2, "superseded"),
        ("_route", 1, 3, "succeeded"),
        ("forward", 1, 4, "pending"),
        ("log", 1, 5, "pending"),
    ]
    # What a handler sees before it: not the run its own replaced.
    forward = store.runs_for_delivery(delivery)[4]
    assert [(p.handler, p.state) for p in store.prior_runs(delivery, forward.position)] == [
        ("_route", "succeeded"),
        ("archive", "succeeded"),
        ("_route", "succeeded"),
    ]
    assert store.dead_runs() == []


def test_a_reroute_goes_after_the_delivery_and_before_later_ones(
    store: RunStore, engine: Engine
) -> None:
    clock = Clock()
    first = add_delivery(engine, session_id="sesn_a", now=clock.now())
    route(store, clock, ["log"])
    finish(store, clock)
    clock.advance(1)
    second = add_delivery(engine, session_id="sesn_a", now=clock.now())
    clock.advance(1)
    [done] = store.reroute([first], clock.now(), by="test")
    # The lane runs the first delivery's new routing before the second's, due earlier or not.
    [run] = store.claim("w", clock.now(), LEASE)
    assert (run.id, run.delivery_id) == (done.route_run_id, first)
    assert store.claim("w2", clock.now(), LEASE) == []  # the lane is held
    store.complete_route(run.id, "w", clock.now(), 1.0, ["log"], attempt=run.attempts)
    [next_run] = store.claim("w", clock.now(), LEASE)
    assert (next_run.delivery_id, next_run.handler) == (second, ROUTE_HANDLER)


def test_busy_deliveries_are_left_alone_and_a_second_reroute_waits(
    store: RunStore, engine: Engine
) -> None:
    clock = Clock()
    delivery = add_delivery(engine, session_id="sesn_a", now=clock.now())
    [busy] = store.reroute([delivery], clock.now(), by="test")
    assert (busy.outcome, busy.route_run_id) == ("busy", None)  # not routed yet
    route(store, clock, ["log"])
    [again] = store.reroute([delivery], clock.now(), by="test")
    assert again.outcome == "busy"  # its log run is still to run
    finish(store, clock)
    [dry] = store.reroute([delivery], clock.now(), by="test", dry_run=True)
    assert (dry.outcome, dry.runs) == ("would_reroute", ("log:succeeded",))
    assert table(store, delivery) == [("_route", 0, 0, "succeeded"), ("log", 0, 1, "succeeded")]
    [first] = store.reroute([delivery], clock.now(), by="test")
    [second] = store.reroute([delivery], clock.now(), by="test")
    assert (first.outcome, second.outcome) == ("rerouted", "busy")


def test_unmatched_selects_the_latest_routing_that_matched_nothing(
    store: RunStore, engine: Engine
) -> None:
    clock = Clock()
    matched = add_delivery(engine, session_id="sesn_a", now=clock.now())
    route(store, clock, ["log"])
    finish(store, clock)
    unmatched = add_delivery(engine, "session.status_running", session_id="sesn_b", now=clock.now())
    route(store, clock, [], decision="no_rule")
    legacy = add_delivery(engine, session_id="sesn_c", now=clock.now())
    route(store, clock, [], decision=None)  # routed before the decision was recorded
    routing = add_delivery(engine, session_id="sesn_d", now=clock.now())  # not routed yet

    assert store.deliveries_to_reroute(unmatched=True) == [unmatched, legacy]
    assert store.deliveries_to_reroute(unmatched=True, event_types={"session.status_idled"}) == [
        legacy
    ]
    assert store.deliveries_to_reroute(session_id="sesn_a") == [matched]
    assert store.deliveries_to_reroute(since=clock.now() + timedelta(seconds=1)) == []
    # Listed while its first routing waits, and left alone by the re-route.
    assert routing in store.deliveries_to_reroute(until=clock.now() + timedelta(days=1))
    assert store.reroute([routing], clock.now(), by="t")[0].outcome == "busy"
    [dry] = store.reroute([legacy], clock.now(), by="t", dry_run=True)
    assert dry.decision == "nothing (unrecorded)"

    store.reroute([unmatched], clock.now(), by="t")
    # Its latest routing is the new one, not finished: no longer listed as unmatched.
    assert store.deliveries_to_reroute(unmatched=True) == [legacy]


def test_discard_keeps_the_reason_and_leaves_the_dead_letter_list(
    store: RunStore, engine: Engine
) -> None:
    clock = Clock()
    delivery = add_delivery(engine, session_id="sesn_a", now=clock.now())
    route(store, clock, ["forward"])
    dead_id, _ = finish(store, clock, fail=True)
    [letter] = store.dead_runs(session_id="sesn_a")
    assert (letter.id, letter.handler, letter.delivery_id) == (dead_id, "forward", delivery)
    with pytest.raises(ValueError, match="reason"):
        store.discard([letter], clock.now(), by="ops", reason="  ")

    assert store.discard([letter], clock.now(), by="ops", reason="target retired") == [letter]
    run = store.get(dead_id)
    assert (run.state, run.resolution, run.resolved_by, run.resolved_at) == (
        "discarded",
        "target retired",
        "ops",
        clock.now(),
    )
    assert store.status().dead_letters == []
    assert store.dead_runs() == []
    assert store.replay(clock.now(), ids=[dead_id]) == []
    assert store.discard([letter], clock.now(), by="ops", reason="again") == []

    # A re-route does not bring a discarded handler back.
    store.reroute([delivery], clock.now(), by="ops")
    route(store, clock, ["forward"])
    assert [h for h, *_ in table(store, delivery)] == ["_route", "forward", "_route"]


def test_discarded_and_superseded_runs_are_pruned_like_dead_ones(
    store: RunStore, engine: Engine
) -> None:
    clock = Clock()
    old = clock.now() - timedelta(days=100)
    delivery = add_delivery(engine, session_id="sesn_a", now=old)
    route(store, clock, ["forward", "log"])
    finish(store, clock, fail=True)
    finish(store, clock, fail=True)
    [first, second] = store.dead_runs()
    store.discard([first], clock.now(), by="ops", reason="no")
    store.reroute([delivery], clock.now(), by="ops")
    route(store, clock, [])
    assert {r.state for r in store.runs_for_delivery(delivery)} == {
        "succeeded",
        "discarded",
        "superseded",
    }
    # Everything of it finished long ago.
    with engine.begin() as conn:
        conn.execute(_runs.update().values(finished_at=old, updated_at=old))
    ages = {kind: timedelta(days=30) for kind in KINDS} | {"dead_runs": timedelta(days=90)}
    prune(engine, RetentionPolicy(ages=ages, status_types=frozenset()), clock.now())
    with engine.connect() as conn:
        left = conn.execute(sa.select(sa.func.count()).select_from(_runs)).scalar_one()
    assert left == 0
    assert second.id != first.id
    assert RunState.DISCARDED.value == "discarded"


def test_a_kept_dead_letter_keeps_its_deliverys_runs_so_it_can_be_replayed(
    store: RunStore, engine: Engine
) -> None:
    clock = Clock()
    delivery = add_delivery(engine, session_id="sesn_a", now=clock.now())
    route(store, clock, ["log", "forward"])
    finish(store, clock)  # log succeeds
    finish(store, clock, fail=True)  # forward is a dead letter
    # 40 days on: past `runs` (30 d), not past `dead_runs` (90 d).
    forty_days_ago = clock.now() - timedelta(days=40)
    with engine.begin() as conn:
        conn.execute(_runs.update().values(finished_at=forty_days_ago, updated_at=forty_days_ago))
    ages = {kind: timedelta(days=30) for kind in KINDS} | {"dead_runs": timedelta(days=90)}
    report = prune(engine, RetentionPolicy(ages=ages, status_types=frozenset()), clock.now())
    assert not report.deleted.get("runs")
    # The replay finds the delivery routed, and `log`'s success: only forward runs again.
    [dead] = store.dead_runs()
    assert store.replay(clock.now(), ids=[dead.id])
    route(store, clock, ["log", "forward"])
    assert [h for h, _g, _p, s in table(store, delivery) if s == "pending"] == ["forward"]
