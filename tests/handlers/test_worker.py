"""The worker against a real store (SQLite and PostgreSQL) and the emulator through the SDK."""

import asyncio
from collections.abc import Callable
from typing import Any

import anthropic
import sqlalchemy as sa
from prometheus_client import REGISTRY
from sqlalchemy.engine import Engine
from sqlalchemy.exc import OperationalError

from emulator.app import create_emulator
from emulator.config import EmulatorConfig
from handlers.builtin.archive import ArchiveHandler
from handlers.config import RouteRule
from handlers.registry import Registry
from handlers.worker import Worker
from idlehook import HandlerContext
from idlehook.settings import Settings
from store.models import HandlerRun, utcnow
from store.runs import RunStore
from store.sessions import SessionStore
from tests.handlers.conftest import API_KEY, Sessions
from tests.handlers.helpers import add_delivery, run_states
from tests.handlers.support import Recorder, run_until
from tests.support.servers import serve, wait_for

TERMINATED = "session.status_terminated"


def only(settings: Settings, *handlers: str, event_types: list[str] | None = None) -> Settings:
    rule = RouteRule(name="test", event_types=event_types or [TERMINATED], handlers=list(handlers))
    return settings.model_copy(update={"routes": [rule]})


def states(store: RunStore, delivery_id: int) -> list[tuple[str, str, int]]:
    return [(r.handler, r.state, r.attempts) for r in store.runs_for_delivery(delivery_id)]


async def test_flaky_plugin_is_retried_until_it_succeeds(store, engine, settings, client) -> None:
    flaky = Recorder("flaky", fail_times=2)
    worker = Worker(store, Registry([flaky]), client, only(settings, "flaky"))
    delivery = add_delivery(engine, TERMINATED, "sesn_x")

    await run_until(worker, lambda: store.unfinished() == 0)
    assert states(store, delivery) == [("_route", "succeeded", 1), ("flaky", "succeeded", 3)]
    assert [attempt for _, _, attempt in flaky.calls] == [1, 2, 3]
    run = store.runs_for_delivery(delivery)[1]
    # The last failure is kept, secrets masked.
    assert run.last_error is not None
    assert "failure 2" in run.last_error
    assert "sk-ant-secret" not in run.last_error
    assert run.duration_ms is not None
    assert run.finished_at is not None


async def test_always_failing_plugin_goes_dead_then_replay_runs_it_again(
    store, engine, settings, client
) -> None:
    broken = Recorder("broken", fail_times=3)
    worker = Worker(store, Registry([broken]), client, only(settings, "broken"))
    delivery = add_delivery(engine, TERMINATED, "sesn_x")
    before = (
        REGISTRY.get_sample_value("idlehook_handler_dead_letters_total", {"handler": "broken"}) or 0
    )

    await run_until(worker, lambda: store.unfinished() == 0)
    assert states(store, delivery)[1] == ("broken", "dead", 3)
    assert (
        REGISTRY.get_sample_value("idlehook_handler_dead_letters_total", {"handler": "broken"})
        == before + 1
    )
    [dead] = store.status().dead_letters
    assert dead.handler == "broken"
    assert dead.event_type == TERMINATED

    # A replay re-routes the delivery: the dead run is kept, superseded by a new one.
    assert store.replay(worker.now(), handler="broken") == [dead.id]
    await run_until(worker, lambda: store.unfinished() == 0)
    assert states(store, delivery)[1:] == [
        ("broken", "superseded", 3),
        ("_route", "succeeded", 1),
        ("broken", "succeeded", 1),
    ]
    assert len(broken.calls) == 4


async def test_permanent_error_and_unknown_handler_dead_letter_at_once(
    store, engine, settings, client
) -> None:
    quitter = Recorder("quitter", fail_times=1, permanent=True)
    worker = Worker(store, Registry([quitter]), client, only(settings, "quitter", "missing"))
    delivery = add_delivery(engine, TERMINATED, "sesn_x")
    await run_until(worker, lambda: store.unfinished() == 0)
    assert states(store, delivery)[1:] == [("quitter", "dead", 1), ("missing", "dead", 1)]
    assert "no handler named 'missing'" in (store.runs_for_delivery(delivery)[2].last_error or "")


async def test_unknown_type_is_acknowledged_and_routed_to_nothing(
    store, engine, settings, client
) -> None:
    catch_all = settings.model_copy(
        update={
            "routes": [*settings.routes, RouteRule(event_types=["agent.created"], handlers=["x"])]
        }
    )
    worker = Worker(store, Registry([]), client, catch_all)
    labels = {"event_type": "unknown", "decision": "no_rule"}
    before = REGISTRY.get_sample_value("idlehook_notifications_routed_total", labels) or 0
    delivery = add_delivery(engine, "session.teleported", "sesn_x")
    other = add_delivery(engine, "vault.exploded", None)
    await run_until(worker, lambda: store.unfinished() == 0)
    assert states(store, delivery) == [("_route", "succeeded", 1)]
    assert states(store, other) == [("_route", "succeeded", 1)]
    after = REGISTRY.get_sample_value("idlehook_notifications_routed_total", labels)
    assert after == before + 2


async def test_one_lane_at_a_time_in_order_many_lanes_in_parallel(
    store, engine, settings, client
) -> None:
    slow = Recorder("slow", delay=0.02)
    config = only(settings, "slow")
    workers = [Worker(store, Registry([slow]), client, config, worker_id=f"w{i}") for i in range(2)]
    deliveries = [add_delivery(engine, TERMINATED, f"sesn_{i % 3}") for i in range(9)]
    tasks = [asyncio.create_task(w.run()) for w in workers]
    try:
        await run_until(
            Worker(store, Registry([slow]), client, config, worker_id="w3"),
            lambda: store.unfinished() == 0,
        )
    finally:
        for w in workers:
            w.stop()
        await asyncio.gather(*tasks)
    assert slow.overlaps == []
    assert len(slow.calls) == 9  # each run exactly once
    for lane in ("sesn_0", "sesn_1", "sesn_2"):
        seen = [event_id for event_id, sid, _ in slow.calls if sid == lane]
        expected = [
            store.delivery(d).event_id for d in deliveries if store.delivery(d).session_id == lane
        ]
        assert seen == expected  # in arrival order


async def test_wake_starts_new_work_without_waiting_for_the_poll(
    store, engine, settings, client
) -> None:
    lazy = settings.model_copy(
        update={"worker": settings.worker.model_copy(update={"poll_seconds": 30.0})}
    )
    recorder = Recorder("rec")
    worker = Worker(store, Registry([recorder]), client, only(lazy, "rec"))
    task = asyncio.create_task(worker.run())
    try:
        await asyncio.sleep(0.1)  # the worker is now asleep on its 30 s poll
        add_delivery(engine, TERMINATED, "sesn_w")
        worker.wake()
        async with asyncio.timeout(10):
            while store.unfinished():
                await asyncio.sleep(0.02)
    finally:
        worker.stop()
        await asyncio.wait_for(task, 10)
    assert len(recorder.calls) == 1


async def test_drain_returns_when_nothing_is_claimable(store, engine, settings, client) -> None:
    recorder = Recorder("rec")
    worker = Worker(store, Registry([recorder]), client, only(settings, "rec"))
    for i in range(3):
        add_delivery(engine, TERMINATED, f"sesn_{i}")
    await asyncio.wait_for(worker.run(drain=True), 20)
    assert store.unfinished() == 0
    assert len(recorder.calls) == 3


async def test_idle_routes_from_fetched_facts_and_records_the_session(
    store, engine, settings, client, sessions: Sessions
) -> None:
    recorder = Recorder("rec")
    rules = [RouteRule(stop_reasons=["end_turn"], metadata={"team": "blue"}, handlers=["rec"])]
    worker = Worker(
        store, Registry([recorder]), client, settings.model_copy(update={"routes": rules})
    )
    finished = sessions.start(script="end_turn", metadata={"team": "blue"})
    waiting = sessions.start(script="requires_action", metadata={"team": "blue"})
    sessions.wait_status(finished, "idle")
    sessions.wait_status(waiting, "idle")
    hit = add_delivery(engine, "session.idled", finished)  # the second family
    miss = add_delivery(engine, "session.status_idled", waiting)
    await run_until(worker, lambda: store.unfinished() == 0)
    assert [h for h, _, _ in states(store, hit)] == ["_route", "rec"]
    assert [h for h, _, _ in states(store, miss)] == ["_route"]
    tracked = SessionStore(engine).get(waiting)
    assert tracked is not None
    assert (tracked.status, tracked.stop_reason) == ("idle", "requires_action")
    assert tracked.agent_id == sessions.agent_id
    assert tracked.session_metadata["team"] == "blue"
    assert tracked.last_webhook_at is not None
    assert tracked.created_at is not None


async def test_stale_idle_is_not_harvested(store, engine, settings) -> None:
    # A slow emulator: the session stays running long after the (early) idle notification.
    with serve(create_emulator(EmulatorConfig(speed=1.0, run_seconds=120.0))) as url:
        sessions = Sessions(url)
        session_id = sessions.start()
        sessions.wait_status(session_id, "running")
        recorder = Recorder("archive")
        async with anthropic.AsyncAnthropic(api_key=API_KEY, base_url=url, max_retries=0) as client:
            worker = Worker(store, Registry([recorder]), client, settings)
            delivery = add_delivery(engine, "session.status_idled", session_id)
            await run_until(worker, lambda: store.unfinished() == 0)
        sessions.api.close()
    assert states(store, delivery) == [("_route", "succeeded", 1)]
    assert recorder.calls == []
    tracked = SessionStore(engine).get(session_id)
    assert tracked is not None
    assert tracked.status == "running"


async def test_a_deleted_session_routes_by_type_only(
    store, engine, settings, client, sessions: Sessions
) -> None:
    session_id = sessions.finished()
    sessions.api.beta.sessions.delete(session_id)
    recorder = Recorder("rec")
    rules = [
        RouteRule(event_types=["session.deleted"], handlers=["rec"]),
        RouteRule(stop_reasons=["end_turn"], handlers=["never"]),
    ]
    worker = Worker(
        store, Registry([recorder]), client, settings.model_copy(update={"routes": rules})
    )
    late = add_delivery(engine, "session.status_idled", session_id)
    gone = add_delivery(engine, "session.deleted", session_id)
    await run_until(worker, lambda: store.unfinished() == 0)
    assert run_states(engine) == {
        (late, "_route"): "succeeded",
        (gone, "_route"): "succeeded",
        (gone, "rec"): "succeeded",
    }
    tracked = SessionStore(engine).get(session_id)
    assert tracked is not None
    assert tracked.deleted_at is not None


def test_routes_naming_missing_handlers_are_reported(store: RunStore, settings: Settings) -> None:
    from structlog.testing import capture_logs

    client = anthropic.AsyncAnthropic(api_key="k", base_url="http://127.0.0.1:9")
    with capture_logs() as logs:
        Worker(store, Registry([]), client, settings)
    [entry] = [e for e in logs if e["event"] == "worker.routes_name_missing_handlers"]
    assert entry["handlers"] == ["answer", "archive", "log"]


def short_lease(settings: Settings, seconds: float) -> Settings:
    worker = settings.worker.model_copy(update={"lease_seconds": seconds})
    return settings.model_copy(update={"worker": worker})


class Stuck:
    """Blocks on its first call until cancelled; later calls return at once."""

    def __init__(self, name: str = "stuck", release: Callable[[], bool] | None = None) -> None:
        self.name = name
        self.release = release or (lambda: False)
        self.calls: list[int] = []
        self.cancelled = 0

    async def handle(self, ctx: HandlerContext) -> None:
        self.calls.append(ctx.attempt)
        if len(self.calls) > 1:
            return
        try:
            while not self.release():
                await asyncio.sleep(0.02)
        except asyncio.CancelledError:
            self.cancelled += 1
            raise


async def wait_until(predicate: Callable[[], Any], timeout: float = 20.0) -> Any:
    return await asyncio.to_thread(wait_for, predicate, timeout)


async def test_a_lost_lease_cancels_the_plugin_and_discards_its_completion(
    store, engine, settings, client
) -> None:
    stuck = Stuck()
    worker = Worker(store, Registry([stuck]), client, only(short_lease(settings, 0.6), "stuck"))
    delivery = add_delivery(engine, TERMINATED, "sesn_x")
    lost_before = REGISTRY.get_sample_value("idlehook_handler_leases_lost_total") or 0
    task = asyncio.create_task(worker.run())
    try:
        await wait_until(lambda: stuck.calls)
        # Another claimer takes the run (its attempt counter moves on, its lease is live).
        run_id = store.runs_for_delivery(delivery)[1].id
        with engine.begin() as conn:
            conn.execute(
                sa.update(HandlerRun)
                .where(HandlerRun.id == run_id)  # type: ignore[arg-type]
                .values(attempts=HandlerRun.attempts + 1, lease_owner="thief")
            )
        await wait_until(lambda: stuck.cancelled)
        assert store.get(run_id).state == "running"  # the cancelled attempt wrote nothing
        # The thief never finishes either: once its lease runs out the run is redone.
        await wait_until(lambda: store.unfinished() == 0)
    finally:
        worker.stop()
        await asyncio.wait_for(task, 20)
    assert stuck.calls == [1, 3]
    assert states(store, delivery)[1] == ("stuck", "succeeded", 3)
    assert REGISTRY.get_sample_value("idlehook_handler_leases_lost_total") == lost_before + 1


class FlakyRenewals(RunStore):
    """A store whose heartbeat writes fail while `down` (the database briefly unreachable)."""

    def __init__(self, engine: Engine, down: bool) -> None:
        super().__init__(engine)
        self.down = down
        self.renewals: list[bool] = []

    def renew(self, *args: Any, **kwargs: Any) -> bool:
        if self.down:
            self.renewals.append(False)
            raise OperationalError("UPDATE handler_runs", {}, Exception("connection refused"))
        self.renewals.append(True)
        return super().renew(*args, **kwargs)


async def test_renewal_errors_are_survived_until_the_lease_runs_out(
    engine, settings, client
) -> None:
    store = FlakyRenewals(engine, down=True)

    def recovered() -> bool:
        # One failed heartbeat, then the database is back and one succeeds.
        if store.renewals:
            store.down = False
        return True in store.renewals

    patient = Stuck("patient", release=recovered)
    worker = Worker(store, Registry([patient]), client, only(short_lease(settings, 1.5), "patient"))
    delivery = add_delivery(engine, TERMINATED, "sesn_x")
    await run_until(worker, lambda: store.unfinished() == 0)
    assert (patient.calls, patient.cancelled) == ([1], 0)
    assert states(store, delivery)[1] == ("patient", "succeeded", 1)


async def test_a_lease_that_runs_out_unrenewed_cancels_the_plugin(engine, settings, client) -> None:
    store = FlakyRenewals(engine, down=True)
    stuck = Stuck()
    worker = Worker(store, Registry([stuck]), client, only(short_lease(settings, 0.6), "stuck"))
    delivery = add_delivery(engine, TERMINATED, "sesn_x")
    await run_until(worker, lambda: store.unfinished() == 0)
    # The first attempt was given up once its lease expired; the re-claim did the work.
    assert (stuck.calls, stuck.cancelled) == ([1, 2], 1)
    assert states(store, delivery)[1] == ("stuck", "succeeded", 2)


async def test_a_late_notification_for_a_deleted_session_routes_nothing(
    store, engine, settings, client, sessions: Sessions
) -> None:
    session_id = sessions.finished()
    sessions.api.beta.sessions.delete(session_id)
    SessionStore(engine).mark(session_id, utcnow(), deleted=True)
    recorder = Recorder("rec")
    worker = Worker(store, Registry([recorder]), client, only(settings, "rec"))
    late = add_delivery(engine, TERMINATED, session_id)
    await run_until(worker, lambda: store.unfinished() == 0)
    assert states(store, late) == [("_route", "succeeded", 1)]
    assert recorder.calls == []


async def test_a_404_after_idlehook_deleted_the_session_is_done(
    store, engine, settings, client, sessions: Sessions
) -> None:
    """Routed before the session was deleted (here by a handler standing in for the reaper):
    the handlers after it find nothing to fetch, which is not an error."""

    class Reap:
        name = "reap"

        async def handle(self, ctx: HandlerContext) -> None:
            await ctx.client.beta.sessions.delete(ctx.session_id)
            await ctx.record_deleted()

    ours, theirs = sessions.finished(), sessions.finished()
    registry = Registry([Reap(), ArchiveHandler()])
    worker = Worker(store, registry, client, only(settings, "reap", "archive"))
    ours_delivery = add_delivery(engine, TERMINATED, ours)
    await run_until(worker, lambda: store.unfinished() == 0)
    assert [s for _, s, _ in states(store, ours_delivery)] == ["succeeded"] * 3

    # Deleted behind idlehook's back: the 404 is still an error.
    sessions.api.beta.sessions.delete(theirs)
    archive_only = Worker(store, registry, client, only(settings, "archive"))
    theirs_delivery = add_delivery(engine, TERMINATED, theirs)
    await run_until(archive_only, lambda: store.unfinished() == 0)
    assert states(store, theirs_delivery)[1][:2] == ("archive", "dead")
