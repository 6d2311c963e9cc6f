"""The inbox ingest path on SQLite and PostgreSQL: insert-if-new, routing runs, group commit."""

import asyncio
import os
import signal
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa
import structlog

from store.engine import make_engine
from store.inbox import (
    ROUTE_HANDLER,
    Inbox,
    IngestResult,
    NewDelivery,
    StoreUnavailable,
    plan_batch,
    session_id_for,
    to_row,
)
from store.models import Source
from tests.receiver.outage import store_down

T0 = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)


def delivery(
    event_id: str,
    event_type: str = "session.status_idled",
    resource_id: str = "sesn_1",
    source: str = Source.WEBHOOK,
) -> NewDelivery:
    return NewDelivery(
        event_id=event_id,
        event_type=event_type,
        resource_id=resource_id,
        session_id=session_id_for(event_type, resource_id),
        event_created_at=T0 - timedelta(seconds=2),
        received_at=T0,
        body='{"type":"event"}',
        headers={"webhook-id": event_id},
        secret_index=0 if source == Source.WEBHOOK else None,
        source=source,
    )


@pytest.fixture
def inbox(db_url: str) -> Iterator[Inbox]:
    inbox = Inbox.connect(db_url, now=lambda: T0)
    yield inbox
    inbox.close()


@pytest.fixture
def db(db_url: str) -> Iterator[sa.Engine]:
    engine = make_engine(db_url, pool_size=1)
    yield engine
    engine.dispose()


def rows(db: sa.Engine, sql: str) -> list[sa.RowMapping]:
    with db.connect() as conn:
        return list(conn.execute(sa.text(sql)).mappings())


def test_plan_batch_keeps_first_copies_in_order() -> None:
    firsts, extra = plan_batch([to_row(delivery(i)) for i in ("a", "b", "a", "a")])
    assert [row[0] for row in firsts] == ["a", "b"]
    assert {k: v.count for k, v in extra.items()} == {"a": 2, "b": 0}


def test_new_delivery_gets_its_routing_run(inbox: Inbox, db: sa.Engine) -> None:
    result = inbox.ingest_sync(delivery("wevt_1"))
    assert result.new
    [stored] = rows(db, "SELECT * FROM deliveries")
    assert stored["id"] == result.delivery_id
    assert (stored["event_id"], stored["event_type"], stored["resource_id"]) == (
        "wevt_1",
        "session.status_idled",
        "sesn_1",
    )
    assert (stored["session_id"], stored["source"], stored["secret_index"]) == (
        "sesn_1",
        "webhook",
        0,
    )
    assert stored["duplicates"] == 0
    assert stored["last_duplicate_at"] is None
    [run] = rows(db, "SELECT * FROM handler_runs")
    assert run["delivery_id"] == result.delivery_id
    assert (run["handler"], run["position"], run["lane"], run["state"]) == (
        ROUTE_HANDLER,
        0,
        "sesn_1",
        "pending",
    )
    assert run["attempts"] == 0


def test_non_session_event_gets_its_own_lane(inbox: Inbox, db: sa.Engine) -> None:
    inbox.ingest_sync(delivery("wevt_a", "agent.created", "agent_1"))
    [stored] = rows(db, "SELECT session_id FROM deliveries")
    assert stored["session_id"] is None
    [run] = rows(db, "SELECT lane FROM handler_runs")
    assert run["lane"] == "delivery:wevt_a"


def test_duplicate_is_recorded_not_queued_again(inbox: Inbox, db: sa.Engine) -> None:
    first = inbox.ingest_sync(delivery("wevt_1"))
    again = inbox.ingest_sync(delivery("wevt_1"))
    assert again == IngestResult(new=False, delivery_id=first.delivery_id)
    inbox.ingest_sync(delivery("wevt_1"))
    [stored] = rows(db, "SELECT duplicates, last_duplicate_at FROM deliveries")
    assert stored["duplicates"] == 2
    assert stored["last_duplicate_at"] is not None
    assert len(rows(db, "SELECT id FROM handler_runs")) == 1


def test_duplicates_inside_one_batch_and_against_the_table(inbox: Inbox, db: sa.Engine) -> None:
    old = inbox.ingest_sync(delivery("old"))
    results = inbox.write_batch(
        [delivery("a"), delivery("old"), delivery("a"), delivery("b"), delivery("a")]
    )
    assert [r.new for r in results] == [True, False, False, True, False]
    assert results[1].delivery_id == old.delivery_id
    assert results[0].delivery_id == results[2].delivery_id == results[4].delivery_id
    dups = {r["event_id"]: r["duplicates"] for r in rows(db, "SELECT * FROM deliveries")}
    assert dups == {"old": 1, "a": 2, "b": 0}
    runs = rows(db, "SELECT delivery_id FROM handler_runs ORDER BY delivery_id")
    assert len(runs) == 3
    # A batch made only of already-known events inserts no runs at all.
    assert [r.new for r in inbox.write_batch([delivery("a"), delivery("b")])] == [False, False]
    assert len(rows(db, "SELECT id FROM handler_runs")) == 3


def test_reconciler_path_shares_the_dedupe(inbox: Inbox, db: sa.Engine) -> None:
    synthetic = inbox.ingest_sync(delivery("wevt_r", source=Source.RECONCILE))
    assert synthetic.new
    assert not inbox.ingest_sync(delivery("wevt_r")).new
    [stored] = rows(db, "SELECT source, secret_index FROM deliveries")
    assert (stored["source"], stored["secret_index"]) == ("reconcile", None)


async def test_concurrent_ingests_are_group_committed(db_url: str, db: sa.Engine) -> None:
    sizes: list[int] = []
    inbox = Inbox.connect(db_url, on_batch=sizes.append, max_batch=64)
    try:
        await inbox.start()
        ids = [f"wevt_{i % 150}" for i in range(300)]  # every event twice
        results = await asyncio.gather(*(inbox.ingest(delivery(i)) for i in ids))
        await inbox.stop()
    finally:
        inbox.close()
    assert sum(r.new for r in results) == 150
    by_event: dict[str, set[int]] = {}
    for event_id, result in zip(ids, results, strict=True):
        by_event.setdefault(event_id, set()).add(result.delivery_id)
    assert all(len(v) == 1 for v in by_event.values())
    assert max(sizes) > 1
    assert max(sizes) <= 64
    assert sum(sizes) == 300
    assert len(rows(db, "SELECT id FROM deliveries")) == 150
    assert len(rows(db, "SELECT id FROM handler_runs")) == 150
    assert sum(r["duplicates"] for r in rows(db, "SELECT duplicates FROM deliveries")) == 150


async def test_ingest_starts_the_writer_on_demand(inbox: Inbox) -> None:
    assert (await inbox.ingest(delivery("lazy"))).new
    await inbox.stop()


async def test_each_commit_logs_one_line_naming_its_events(inbox: Inbox) -> None:
    ids = [f"wevt_{i % 40}" for i in range(60)]  # the first 20 twice
    with structlog.testing.capture_logs() as logs:
        results = await asyncio.gather(*(inbox.ingest(delivery(i)) for i in ids))
        await inbox.stop()
    lines = [entry for entry in logs if entry["event"] == "inbox.committed"]
    assert 1 <= len(lines) < len(ids)  # group commits, not a line per delivery
    stored = [event_id for line in lines for event_id in line["stored"]]
    duplicate = [event_id for line in lines for event_id in line["duplicate"]]
    assert sorted(stored) == sorted(set(ids))
    assert sorted(duplicate) == sorted(ids[40:])
    assert sum(r.new for r in results) == 40
    assert not [entry for entry in logs if entry["event"] == "webhook.received"]


async def test_stop_answers_everything_queued_before_it(inbox: Inbox, db: sa.Engine) -> None:
    pending = [asyncio.ensure_future(inbox.ingest(delivery(f"wevt_{i}"))) for i in range(50)]
    await asyncio.sleep(0)  # every ingest has queued its delivery
    await inbox.stop()
    assert all(task.done() for task in pending)
    assert sum(task.result().new for task in pending) == 50
    assert len(rows(db, "SELECT id FROM deliveries")) == 50
    # A stopped inbox starts again on the next delivery.
    assert (await inbox.ingest(delivery("wevt_after"))).new


async def test_an_ingest_racing_the_stop_is_still_answered(inbox: Inbox) -> None:
    await inbox.ingest(delivery("wevt_first"))
    stopping = asyncio.ensure_future(inbox.stop())
    await asyncio.sleep(0)  # the stop mark is queued; the writer may not have reached it yet
    late = await asyncio.wait_for(inbox.ingest(delivery("wevt_late")), timeout=10)
    await asyncio.wait_for(stopping, timeout=10)
    assert late.new
    await inbox.stop()


async def test_writer_process_is_gone_after_stop(inbox: Inbox) -> None:
    await inbox.ingest(delivery("wevt_1"))
    pid = inbox.writer_pid
    assert pid is not None
    assert pid != os.getpid()
    await inbox.stop()
    assert inbox.writer_pid is None
    assert not _alive(pid)


async def test_a_killed_writer_fails_its_batch_and_the_next_one_is_written(
    inbox: Inbox, db: sa.Engine
) -> None:
    await inbox.ingest(delivery("wevt_before"))
    pid = inbox.writer_pid
    assert pid is not None
    os.kill(pid, signal.SIGSTOP)  # frozen, so the next batch is surely in flight when it dies
    in_flight = asyncio.ensure_future(inbox.ingest(delivery("wevt_in_flight")))
    await asyncio.sleep(0.2)
    os.kill(pid, signal.SIGKILL)
    with pytest.raises(StoreUnavailable):
        await asyncio.wait_for(in_flight, timeout=10)
    # A new writer takes the next delivery; the one that failed is retried by its sender.
    assert (await asyncio.wait_for(inbox.ingest(delivery("wevt_after")), timeout=30)).new
    assert inbox.writer_pid not in (None, pid)
    assert (await inbox.ingest(delivery("wevt_in_flight"))).new
    await inbox.stop()
    stored = [r["event_id"] for r in rows(db, "SELECT event_id FROM deliveries ORDER BY id")]
    assert stored == ["wevt_before", "wevt_after", "wevt_in_flight"]


async def test_a_row_the_wire_cannot_carry_fails_alone(inbox: Inbox, db: sa.Engine) -> None:
    odd = (*to_row(delivery("wevt_odd"))[:7], {"webhook-id": object()}, 0, "webhook")
    with pytest.raises(StoreUnavailable):
        await inbox.ingest_row(odd)  # type: ignore[arg-type]
    assert (await inbox.ingest(delivery("wevt_fine"))).new
    await inbox.stop()
    assert [r["event_id"] for r in rows(db, "SELECT event_id FROM deliveries")] == ["wevt_fine"]


async def test_each_writer_answers_only_its_own_rows(inbox: Inbox, db: sa.Engine) -> None:
    """A writer still finishing its rows while a new one takes the next: neither's answers may
    reach the other's callers (say a stop closed the first while a request arrived)."""
    await inbox.ingest(delivery("wevt_warm"))
    link = inbox._link
    first = link._writer
    assert first is not None
    os.kill(first.popen.pid, signal.SIGSTOP)  # it holds its rows, unanswered
    held = [asyncio.ensure_future(inbox.ingest(delivery(f"wevt_held_{i}"))) for i in range(3)]
    await asyncio.sleep(0.2)
    assert len(first.sent) == 3
    first.closing = True  # what stop() does before closing its pipe: new rows go elsewhere
    later = [await inbox.ingest(delivery(f"wevt_later_{i}")) for i in range(3)]
    assert link._writer is not first
    os.kill(first.popen.pid, signal.SIGCONT)
    answered = await asyncio.wait_for(asyncio.gather(*held), timeout=30)
    ids = {r["event_id"]: r["id"] for r in rows(db, "SELECT id, event_id FROM deliveries")}
    for i, result in enumerate(answered):
        assert result == IngestResult(True, ids[f"wevt_held_{i}"])
    for i, result in enumerate(later):
        assert result == IngestResult(True, ids[f"wevt_later_{i}"])
    await inbox.stop()
    first.to_writer.close()  # type: ignore[union-attr]
    await asyncio.wait_for(first.gone, timeout=30)


async def test_a_failing_batch_observer_loses_no_answer(db_url: str) -> None:
    def observe(size: int) -> None:
        raise RuntimeError("a broken metrics backend")

    inbox = Inbox.connect(db_url, on_batch=observe)
    try:
        results = await asyncio.gather(*(inbox.ingest(delivery(f"wevt_{i}")) for i in range(20)))
        assert [r.new for r in results] == [True] * 20
        assert (await inbox.ingest(delivery("wevt_after"))).new  # the pairing held
        await inbox.stop()
    finally:
        inbox.close()


def test_an_inbox_used_from_one_loop_then_another_still_answers(inbox: Inbox) -> None:
    assert asyncio.run(inbox.ingest(delivery("wevt_first_loop"))).new
    # The first loop is gone, and with it the pipes to its writer: a new one serves this one.
    assert asyncio.run(inbox.ingest(delivery("wevt_second_loop"))).new
    asyncio.run(inbox.stop())


async def test_close_without_stop_leaves_no_writer_behind(db_url: str) -> None:
    inbox = Inbox.connect(db_url)
    await inbox.ingest(delivery("wevt_1"))
    pid = inbox.writer_pid
    assert pid is not None
    inbox.close()
    assert not _alive(pid)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_depth_counts_unfinished_runs(inbox: Inbox, db: sa.Engine) -> None:
    inbox.ping()
    assert inbox.depth() == 0
    inbox.write_batch([delivery("a"), delivery("b"), delivery("c")])
    with db.begin() as conn:
        conn.execute(sa.text("UPDATE handler_runs SET state = 'succeeded' WHERE id = 1"))
    assert inbox.depth() == 2


@pytest.mark.postgres
async def test_store_down_fails_the_whole_batch_then_recovers(postgres_url: str) -> None:
    inbox = Inbox.connect(postgres_url)
    db = make_engine(postgres_url, pool_size=1)
    try:
        inbox.ingest_sync(delivery("before"))
        with store_down(postgres_url):
            with pytest.raises(StoreUnavailable):
                inbox.ping()
            with pytest.raises(StoreUnavailable):
                inbox.depth()
            outcomes = await asyncio.gather(
                *(inbox.ingest(delivery(f"down_{i}")) for i in range(5)), return_exceptions=True
            )
            assert all(isinstance(o, StoreUnavailable) for o in outcomes)
        # The same process, the same engine: it comes back once the database does.
        inbox.ping()
        assert (await inbox.ingest(delivery("after"))).new
        await inbox.stop()
        assert [r["event_id"] for r in rows(db, "SELECT event_id FROM deliveries ORDER BY id")] == [
            "before",
            "after",
        ]
        assert len(rows(db, "SELECT id FROM handler_runs")) == 2
    finally:
        inbox.close()
        db.dispose()


@pytest.mark.postgres
async def test_one_refused_row_does_not_fail_its_batch(postgres_url: str) -> None:
    sizes: list[int] = []
    inbox = Inbox.connect(postgres_url, on_batch=sizes.append)
    too_long = delivery("poison", resource_id="sesn_" + "x" * 300)  # wider than the column
    try:
        await inbox.start()
        with structlog.testing.capture_logs() as logs:
            outcomes = await asyncio.gather(
                inbox.ingest(delivery("ok_1")),
                inbox.ingest(too_long),
                inbox.ingest(delivery("ok_2")),
                return_exceptions=True,
            )
        await inbox.stop()
    finally:
        inbox.close()
    assert isinstance(outcomes[1], StoreUnavailable)
    assert [o.new for o in (outcomes[0], outcomes[2]) if isinstance(o, IngestResult)] == [True] * 2
    # What the writer process logged is logged here, through this process's pipeline.
    [refused] = [e for e in logs if e["event"] == "inbox.delivery_refused"]
    assert (refused["log_level"], refused["event_id"]) == ("warning", "poison")


@pytest.mark.postgres
def test_receivers_upserting_the_same_events_in_opposite_orders_never_deadlock(
    postgres_url: str,
) -> None:
    """Two receivers get one redelivered pair in opposite orders: both batches must commit."""
    left, right = Inbox(make_engine(postgres_url)), Inbox(make_engine(postgres_url))
    failures: list[BaseException] = []
    try:
        for round_ in range(15):
            ids = [f"wevt_pair_{round_}_{n}" for n in range(40)]
            barrier = threading.Barrier(2)

            def write(inbox: Inbox, order: list[str], barrier: threading.Barrier) -> None:
                barrier.wait()
                try:
                    inbox.write_batch([delivery(i) for i in order])
                except BaseException as exc:
                    failures.append(exc)

            threads = [
                threading.Thread(target=write, args=(left, ids, barrier)),
                threading.Thread(target=write, args=(right, ids[::-1], barrier)),
            ]
            for t in threads:
                t.start()
            for t in threads:
                t.join(30)
        assert failures == []
        with left.engine.connect() as conn:
            stored = conn.execute(sa.text("select count(*) from deliveries")).scalar_one()
            runs = conn.execute(sa.text("select count(*) from handler_runs")).scalar_one()
        assert stored == runs == 15 * 40  # each event once, each routed once
    finally:
        left.close()
        right.close()
