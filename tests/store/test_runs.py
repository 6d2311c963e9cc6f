"""The run queue on SQLite and PostgreSQL: lane order, leases, fencing, concurrent claimers."""

import threading
from collections.abc import Iterator
from datetime import timedelta

import pytest
from sqlalchemy.engine import Engine

from store.engine import make_engine
from store.models import RunState
from store.runs import RunStore
from tests.handlers.helpers import Clock, add_delivery, add_run

LEASE = timedelta(seconds=30)


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:
    engine = make_engine(db_url, pool_size=8)
    yield engine
    engine.dispose()


@pytest.fixture
def store(engine: Engine) -> RunStore:
    return RunStore(engine)


def test_route_then_handlers_in_order_within_a_lane(store: RunStore, engine: Engine) -> None:
    clock = Clock()
    first = add_delivery(engine, session_id="sesn_a", now=clock.now())
    second = add_delivery(engine, session_id="sesn_a", now=clock.now())

    [route] = store.claim("w1", clock.now(), LEASE, limit=10)
    assert (route.delivery_id, route.handler, route.attempts) == (first, "_route", 1)
    # The lane is busy: nothing else is claimable, not even the second delivery's routing.
    assert store.claim("w2", clock.now(), LEASE, limit=10) == []

    assert store.complete_route(
        route.id, "w1", clock.now(), 1.0, ["archive", "log"], attempt=route.attempts
    )
    order = []
    while claimed := store.claim("w1", clock.now(), LEASE, limit=10):
        assert len(claimed) == 1  # one lane: never two at once
        run = claimed[0]
        order.append((run.delivery_id, run.handler))
        if run.handler == "_route":
            assert store.complete_route(
                run.id, "w1", clock.now(), 1.0, ["log"], attempt=run.attempts
            )
        else:
            assert store.succeed(run.id, "w1", clock.now(), 1.0, attempt=run.attempts)
    assert order == [(first, "archive"), (first, "log"), (second, "_route"), (second, "log")]
    assert [r.position for r in store.runs_for_delivery(first)] == [0, 1, 2]
    assert store.unfinished() == 0


def test_a_routed_delivery_s_handlers_go_before_later_deliveries(
    store: RunStore, engine: Engine
) -> None:
    """A burst: many sessions' routing runs are due at once. Once one is routed, its handlers
    are due as of its delivery, so they are claimed before the routing of later deliveries (in
    other lanes): each session is finished while its delivery's reads are fresh."""
    clock = Clock()
    first = add_delivery(engine, session_id="sesn_a", now=clock.now())
    later = []
    for i in range(3):
        clock.advance(1)
        later.append(add_delivery(engine, session_id=f"sesn_{i}", now=clock.now()))
    clock.advance(1)

    [route] = store.claim("w1", clock.now(), LEASE, limit=1)
    assert (route.delivery_id, route.handler) == (first, "_route")
    assert store.complete_route(
        route.id, "w1", clock.now(), 1.0, ["archive", "delete"], attempt=route.attempts
    )
    [next_run] = store.claim("w1", clock.now(), LEASE, limit=1)
    assert (next_run.delivery_id, next_run.handler) == (first, "archive")
    # The later deliveries' routing is still due, after it.
    rest = store.claim("w2", clock.now(), LEASE, limit=10)
    assert sorted(r.delivery_id for r in rest) == sorted(later)


def test_complete_route_is_idempotent_per_handler(store: RunStore, engine: Engine) -> None:
    clock = Clock()
    delivery = add_delivery(engine, now=clock.now())
    [route] = store.claim("w1", clock.now(), LEASE)
    assert store.complete_route(
        route.id, "w1", clock.now(), 1.0, ["log", "log", "_route"], attempt=route.attempts
    )
    assert [r.handler for r in store.runs_for_delivery(delivery)] == ["_route", "log"]


def test_lanes_run_in_parallel(store: RunStore, engine: Engine) -> None:
    clock = Clock()
    for sid in ("sesn_a", "sesn_b", "sesn_c"):
        add_delivery(engine, session_id=sid, now=clock.now())
        add_delivery(engine, session_id=sid, now=clock.now())
    claimed = store.claim("w1", clock.now(), LEASE, limit=10)
    assert sorted(r.lane for r in claimed) == ["sesn_a", "sesn_b", "sesn_c"]


def test_failed_run_blocks_its_lane_until_retried_and_dead_does_not(
    store: RunStore, engine: Engine
) -> None:
    clock = Clock()
    first = add_delivery(engine, session_id="sesn_a", now=clock.now())
    second = add_delivery(engine, session_id="sesn_a", now=clock.now())
    [run] = store.claim("w1", clock.now(), LEASE)
    retry_at = clock.now() + timedelta(seconds=10)
    assert (
        store.fail(run.id, "w1", clock.now(), "boom", retry_at, 1.0, attempt=run.attempts)
        is RunState.FAILED
    )
    assert store.claim("w1", clock.now(), LEASE) == []  # not due, and it blocks the lane

    clock.advance(11)
    [again] = store.claim("w1", clock.now(), LEASE)
    assert (again.id, again.attempts) == (run.id, 2)
    assert (
        store.fail(again.id, "w1", clock.now(), "boom", None, 1.0, attempt=again.attempts)
        is RunState.DEAD
    )
    [next_one] = store.claim("w1", clock.now(), LEASE)
    assert next_one.delivery_id == second
    saved = store.get(run.id)
    assert (saved.state, saved.last_error, saved.delivery_id) == ("dead", "boom", first)
    assert saved.finished_at is not None


def test_expired_lease_is_rescued_and_the_old_completion_is_rejected(
    store: RunStore, engine: Engine
) -> None:
    clock = Clock()
    add_delivery(engine, now=clock.now())
    [run] = store.claim("dead-worker", clock.now(), LEASE)
    clock.advance(10)
    assert store.renew(
        run.id, "dead-worker", clock.now(), LEASE, attempt=run.attempts
    )  # heartbeat: still ours
    clock.advance(LEASE.total_seconds() - 1)
    assert store.claim("w2", clock.now(), LEASE) == []  # lease still live
    clock.advance(2)
    [rescued] = store.claim("w2", clock.now(), LEASE)
    assert (rescued.id, rescued.attempts) == (run.id, 2)

    # The first worker wakes up and tries to finish: every write is refused.
    assert not store.renew(run.id, "dead-worker", clock.now(), LEASE, attempt=run.attempts)
    assert not store.succeed(run.id, "dead-worker", clock.now(), 1.0, attempt=run.attempts)
    assert not store.complete_route(
        run.id, "dead-worker", clock.now(), 1.0, ["log"], attempt=run.attempts
    )
    assert (
        store.fail(run.id, "dead-worker", clock.now(), "x", None, 1.0, attempt=run.attempts) is None
    )
    assert store.get(run.id).lease_owner == "w2"
    assert store.complete_route(
        rescued.id, "w2", clock.now(), 1.0, ["log"], attempt=rescued.attempts
    )
    assert not store.succeed(
        rescued.id, "w2", clock.now(), 1.0, attempt=rescued.attempts
    )  # already finished


def test_a_stale_attempt_of_the_same_owner_is_fenced_out(store: RunStore, engine: Engine) -> None:
    """One worker id serves all of a worker's tasks: re-claiming its own expired run must still
    shut out the attempt that let the lease lapse."""
    clock = Clock()
    add_delivery(engine, now=clock.now())
    [stale] = store.claim("w", clock.now(), LEASE)
    clock.advance(LEASE.total_seconds() + 1)
    [live] = store.claim("w", clock.now(), LEASE)
    assert (live.id, live.attempts) == (stale.id, 2)

    assert not store.renew(stale.id, "w", clock.now(), LEASE, attempt=stale.attempts)
    assert store.fail(stale.id, "w", clock.now(), "x", None, 1.0, attempt=stale.attempts) is None
    assert not store.succeed(stale.id, "w", clock.now(), 1.0, attempt=stale.attempts)
    assert not store.complete_route(stale.id, "w", clock.now(), 1.0, ["log"], attempt=1)
    assert store.get(live.id).state == RunState.RUNNING.value

    assert store.renew(live.id, "w", clock.now(), LEASE, attempt=live.attempts)
    assert store.complete_route(live.id, "w", clock.now(), 1.0, ["log"], attempt=live.attempts)
    assert store.get(live.id).state == RunState.SUCCEEDED.value


def test_a_late_earlier_delivery_never_runs_beside_a_live_lease(
    store: RunStore, engine: Engine
) -> None:
    """Deliveries can commit out of id order; a live run still keeps its lane to itself."""
    clock = Clock()
    delivery = add_delivery(engine, session_id="sesn_a", now=clock.now())
    [route] = store.claim("w1", clock.now(), LEASE)
    assert store.complete_route(
        route.id, "w1", clock.now(), 1.0, ["archive"], attempt=route.attempts
    )
    [archive] = store.claim("w1", clock.now(), LEASE)
    add_run(
        engine, delivery, "late", position=-1, lane="sesn_a", now=clock.now()
    )  # sorts before it
    assert store.claim("w2", clock.now(), LEASE) == []
    assert store.succeed(archive.id, "w1", clock.now(), 1.0, attempt=archive.attempts)
    [late] = store.claim("w2", clock.now(), LEASE)
    assert late.handler == "late"


def test_replay_filters_and_resets(store: RunStore, engine: Engine) -> None:
    clock = Clock()
    ids = {}
    for sid in ("sesn_a", "sesn_b"):
        add_delivery(engine, session_id=sid, now=clock.now())
        [route] = store.claim("w1", clock.now(), LEASE)
        store.complete_route(
            route.id, "w1", clock.now(), 1.0, ["archive", "log"], attempt=route.attempts
        )
        for _ in range(2):
            [run] = store.claim("w1", clock.now(), LEASE)
            store.fail(
                run.id, "w1", clock.now(), f"{run.handler} broke", None, 1.0, attempt=run.attempts
            )
            ids[(sid, run.handler)] = run.id
    status = store.status(dead_limit=3)
    assert status.runs_by_state == {"dead": 4}  # handler runs: the two `_route` runs apart
    assert status.unfinished == 0
    assert len(status.dead_letters) == 3
    assert {d.last_error for d in status.dead_letters} <= {"archive broke", "log broke"}

    # A replay re-routes each chosen dead letter's delivery: every dead letter of it is
    # superseded by one new routing run (tests/store/test_recovery.py has the rest).
    assert store.replay(clock.now(), session_id="sesn_b", handler="log") == sorted(
        [ids[("sesn_b", "archive")], ids[("sesn_b", "log")]]
    )
    assert store.replay(clock.now(), ids=[ids[("sesn_a", "archive")]]) == sorted(
        [ids[("sesn_a", "archive")], ids[("sesn_a", "log")]]
    )
    replayed = store.get(ids[("sesn_a", "archive")])
    assert replayed.state == "superseded"
    assert replayed.superseded_by is not None
    assert store.get(replayed.superseded_by).handler == "_route"
    assert store.replay(clock.now()) == []
    assert store.unfinished() == 2  # the two new routing runs


def test_concurrent_claimers_never_share_a_run_or_a_lane(store: RunStore, engine: Engine) -> None:
    """Four threads hammer claim/complete; record who held what, when (by a shared counter)."""
    lanes = [f"sesn_{i}" for i in range(6)]
    for _ in range(4):
        for sid in lanes:
            add_delivery(engine, session_id=sid)
    lock = threading.Lock()
    active: dict[str, int] = {}
    executed: list[int] = []
    violations: list[str] = []
    errors: list[BaseException] = []

    def work(owner: str) -> None:
        from datetime import UTC, datetime

        try:
            idle_rounds = 0
            while idle_rounds < 20:
                claimed = store.claim(owner, datetime.now(UTC), LEASE, limit=2)
                if not claimed:
                    idle_rounds += 1
                    continue
                idle_rounds = 0
                for run in claimed:
                    with lock:
                        if active.get(run.lane):
                            violations.append(f"lane {run.lane} twice")
                        active[run.lane] = run.id
                        executed.append(run.id)
                for run in claimed:
                    with lock:
                        active[run.lane] = 0
                    now = datetime.now(UTC)
                    if run.handler == "_route":
                        assert store.complete_route(
                            run.id, owner, now, 1.0, ["archive"], attempt=run.attempts
                        )
                    else:
                        assert store.succeed(run.id, owner, now, 1.0, attempt=run.attempts)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(f"w{i}",)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not errors, errors
    assert not violations
    assert len(executed) == len(set(executed)) == 6 * 4 * 2
    assert store.unfinished() == 0
