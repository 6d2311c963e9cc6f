"""The reconciler assumes nothing of `updated_at` and has no horizon, within a call budget: the
real SDK against the emulator on loopback, every webhook dropped, on SQLite and PostgreSQL.

The emulator's wall clock can be shifted (`Shift`): a session rests, and "two days later" wakes
and rests again; the reconciler's clock moves with it. The emulator's `updated_at_moves = some`
keeps `updated_at` still on status changes (the SDK promises no more than "a timestamp").
"""

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from prometheus_client import REGISTRY
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from emulator.app import create_emulator
from emulator.clock import SpeedClock
from emulator.config import EmulatorConfig
from emulator.core import Emulator
from sessions import reconciler as reconciler_module
from sessions.reconciler import Reconciler
from store.delivered import transition_event_id
from store.engine import make_engine
from store.models import Delivery, Source, TrackedSession
from tests.sessions.paced import paced_calls, paced_client
from tests.sessions.reaping import LONG_RUN, Api, _bootstrap, new_session, poll, track
from tests.support.servers import serve

READS = ("GET /v1/sessions", "GET /v1/sessions/{id}", "GET /v1/sessions/{id}/events")


class Shift:
    """A wall clock `offset` away from the real one, shared by the emulator and the sweep."""

    def __init__(self, days: float = 0) -> None:
        self.offset = timedelta(days=days)

    def now(self) -> datetime:
        return datetime.now(UTC) + self.offset


@contextmanager
def shifted_emulator(shift: Shift, **config: Any) -> Iterator[Api]:
    values: dict[str, Any] = {
        "speed": 50.0,
        "run_seconds": 0.5,
        "faults": {"drop_all": True},
        "updated_at_moves": "some",
    }
    values.update(config)
    cfg = EmulatorConfig.model_validate(values)
    emu = Emulator(cfg, clock=SpeedClock(cfg.speed, wall=shift.now))
    with serve(create_emulator(emulator=emu)) as url:
        api = Api(url, emu, "", "")
        asyncio.run(_bootstrap(api))
        yield api


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:
    engine = make_engine(db_url, pool_size=2)
    yield engine
    engine.dispose()


@pytest.fixture
def shift() -> Shift:
    return Shift()


@pytest.fixture
def api(shift: Shift) -> Iterator[Api]:
    with shifted_emulator(shift) as served:
        yield served


@pytest.fixture
def three_days_ago() -> Iterator[tuple[Api, Shift]]:
    shift = Shift(days=-3)
    with shifted_emulator(shift) as served:
        yield served, shift


def reads(api: Api) -> int:
    return sum(api.emu.requests[key] for key in READS)


def idle_times(api: Api, session_id: str) -> list[datetime]:
    record = api.emu.store.sessions[session_id]
    return [
        datetime.fromisoformat(e["processed_at"].replace("Z", "+00:00"))
        for e in record.events
        if e["type"] == "session.status_idle"
    ]


def synthetic(engine: Engine, session_id: str | None = None) -> list[Delivery]:
    with Session(engine) as db:
        query = (
            select(Delivery)
            .where(Delivery.source == str(Source.RECONCILE))
            .order_by(col(Delivery.id))
        )
        if session_id is not None:
            query = query.where(Delivery.session_id == session_id)
        return list(db.exec(query))


def message(text: str) -> Any:
    return {"type": "user.message", "content": [{"type": "text", "text": text}]}


async def test_a_session_that_rests_then_wakes_two_days_later_gets_both_rests_delivered(
    api: Api, engine: Engine, shift: Shift
) -> None:
    async with api.client() as client:
        session = await new_session(api, client)  # runs, rests: its webhooks dropped
        track(engine, session.id)  # as the launcher records it
        rec = Reconciler(client, engine, settle=timedelta(0), now=shift.now)

        first = await rec.sweep()
        [rest_1] = idle_times(api, session.id)
        assert first.synthesised == [transition_event_id(session.id, "idle", rest_1)]

        shift.offset = timedelta(days=2)
        await client.beta.sessions.events.send(session.id, events=[message("again")])

        async def rested_twice() -> bool:
            record = api.emu.store.sessions[session.id]
            return len(idle_times(api, session.id)) == 2 and record.status == "idle"

        await poll(rested_twice)
        now = await client.beta.sessions.retrieve(session.id)
        # Nothing the old reconciler relied on: updated_at stayed where it was, and the
        # session was created two days before this sweep (past a 24 h horizon).
        assert now.updated_at == session.updated_at
        assert now.created_at < shift.now() - timedelta(days=1)

        second = await rec.sweep()
        rest_2 = idle_times(api, session.id)[-1]
        assert rest_2 - rest_1 >= timedelta(days=2)
        assert second.synthesised == [transition_event_id(session.id, "idle", rest_2)]

        # Nothing new: nothing written, and only the two listings are paid for.
        quiet = await rec.sweep()
        assert (quiet.synthesised, quiet.calls) == ([], 2)

    delivered = synthetic(engine, session.id)
    assert [(d.event_type, d.event_created_at) for d in delivered] == [
        ("session.status_idled", rest_1),
        ("session.status_idled", rest_2),
    ]


async def test_a_session_resting_for_days_is_reconciled_and_an_unknown_old_one_only_once_it_wakes(
    engine: Engine, three_days_ago: tuple[Api, Shift]
) -> None:
    api, shift = three_days_ago
    if True:
        async with api.client() as client:
            ours = await new_session(api, client)  # created and rested three days ago
            track(engine, ours.id)
            # Never heard of, created three days ago, never run: not ours to fill in...
            stranger = await new_session(
                api, client, run=False, wait_for="idle", run_seconds=LONG_RUN
            )
            shift.offset = timedelta(0)
            rec = Reconciler(client, engine, settle=timedelta(0), now=shift.now)

            first = await rec.sweep()
            [rested] = idle_times(api, ours.id)
            assert rested < shift.now() - timedelta(days=2)
            assert first.synthesised == [transition_event_id(ours.id, "idle", rested)]

            # ...until it runs: the running list finds it whatever its age.
            await client.beta.sessions.events.send(stranger.id, events=[message("wake up")])
            await poll(lambda: _status(client, stranger.id, "running"))
            second = await rec.sweep()
            [started] = [
                d for d in synthetic(engine, stranger.id) if d.event_type.endswith("run_started")
            ]
            assert second.synthesised == [started.event_id]
            assert (await rec.sweep()).synthesised == []  # its start is delivered now

            # It rests again (interrupted): now tracked, its rest is found too.
            await client.beta.sessions.events.send(stranger.id, events=[{"type": "user.interrupt"}])
            await poll(lambda: _status(client, stranger.id, "idle"))
            third = await rec.sweep()
            [rest] = idle_times(api, stranger.id)
            assert third.synthesised == [transition_event_id(stranger.id, "idle", rest)]


async def _status(client: Any, session_id: str, status: str) -> bool:
    return bool((await client.beta.sessions.retrieve(session_id)).status == status)


async def test_each_sweep_stays_within_its_call_budget_and_works_through_a_backlog(
    api: Api, engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Five sessions a page: the rotating scan sees a few of them a sweep, so a check is one
    # call (listed) or two (a retrieve first).
    monkeypatch.setattr(reconciler_module, "PAGE", 5)
    async with api.client() as setup:
        sessions = [await new_session(api, setup) for _ in range(12)]
    for s in sessions:
        track(engine, s.id)
    async with paced_client(api.url, engine) as client:
        budget = 8
        rec = Reconciler(client, engine, settle=timedelta(0), max_calls=budget, scan_pages=1)
        reports = []
        for _ in range(6):
            before, paced = reads(api), paced_calls("read")
            creates = paced_calls("create")
            report = await rec.sweep()
            made = reads(api) - before
            # Every call counted is one the emulator answered, and one the read budget paced.
            assert made == report.calls == paced_calls("read") - paced
            assert paced_calls("create") == creates
            assert report.calls <= budget
            reports.append(report)
            if len(synthetic(engine)) == len(sessions):
                break
        assert reports[0].deferred > 0  # a backlog bigger than one sweep's budget
        assert len(reports) >= 2

        delivered = synthetic(engine)
        expected = {transition_event_id(s.id, "idle", idle_times(api, s.id)[-1]) for s in sessions}
        assert {d.event_id for d in delivered} == expected
        assert len(delivered) == len(sessions)

        # With nothing changing a sweep costs its listings, however many sessions rest.
        quiet = await rec.sweep()
        assert quiet.synthesised == []
        assert quiet.calls == 2  # a page of running sessions, a page of the rotating scan
        assert quiet.deferred == 0


async def test_the_silence_alarm_fires_on_a_change_the_api_shows_even_before_it_is_filled_in(
    api: Api, engine: Engine, shift: Shift
) -> None:
    async with api.client() as client:
        session = await new_session(api, client)
        track(engine, session.id)
        # Still settling (an hour): nothing is written, but the change is seen.
        patient = Reconciler(
            client, engine, settle=timedelta(hours=1), silence_alarm=timedelta(minutes=5)
        )
        early = await patient.sweep()
        assert (early.synthesised, early.waiting, early.alarm) == ([], 1, False)
        assert REGISTRY.get_sample_value("idlehook_webhook_silence_alarm") == 0

        later = Reconciler(
            client,
            engine,
            settle=timedelta(hours=1),
            silence_alarm=timedelta(minutes=5),
            now=lambda: datetime.now(UTC) + timedelta(minutes=6),
        )
        loud = await later.sweep()
        assert loud.synthesised == []  # still within `settle`
        assert loud.alarm
        assert loud.first_unreported_at == idle_times(api, session.id)[-1]
        assert REGISTRY.get_sample_value("idlehook_webhook_silence_alarm") == 1


def test_which_tracked_sessions_are_settled(engine: Engine) -> None:
    from store import watch
    from store.models import FollowUp, ToolCall

    now = datetime.now(UTC)
    earlier, later = now - timedelta(minutes=5), now + timedelta(minutes=5)

    def delivery(sid: str, kind: str, n: int) -> Delivery:
        return Delivery(
            event_id=f"wevt_{sid}_{n}",
            event_type=kind,
            resource_id=sid,
            session_id=sid,
            received_at=now,
            body="{}",
        )

    idled, started = "session.status_idled", "session.status_run_started"
    with Session(engine) as db:
        for sid, status, status_at in [
            ("never", None, None),
            ("rested", "idle", earlier),
            ("rested_second_family", "idle", earlier),
            ("ended", "terminated", earlier),
            ("followed_up", "idle", earlier),
            ("answered_before", "idle", earlier),
            ("seen_running_since", "running", later),
            ("started_last", "running", earlier),
            ("updated_after", "idle", earlier),
        ]:
            db.add(TrackedSession(id=sid, status=status, status_at=status_at))
        db.add(TrackedSession(id="gone", status="idle", deleted_at=now))
        db.add_all(
            [
                delivery("rested", idled, 1),
                delivery("rested_second_family", "session.idled", 1),
                delivery("ended", "session.status_terminated", 1),
                delivery("followed_up", idled, 1),
                delivery("answered_before", idled, 1),
                delivery("seen_running_since", idled, 1),
                delivery("started_last", idled, 1),
                delivery("started_last", started, 2),
                delivery("updated_after", idled, 1),
                delivery("updated_after", "session.updated", 2),  # not a status: changes nothing
                delivery("gone", idled, 1),
            ]
        )
        db.add(FollowUp(session_id="followed_up", idempotency_key="k", message="m", sent_at=later))
        db.add(
            ToolCall(
                custom_tool_use_id="tu_1",
                session_id="answered_before",
                tool_name="t",
                sent_at=earlier,
            )
        )
        db.commit()

    types = frozenset({idled, started, "session.idled", "session.status_terminated"})
    quiet = frozenset({idled, "session.idled", "session.status_terminated"})
    rows = watch.watched(engine, status_types=types, quiet_types=quiet)
    assert {r.id: r.settled for r in rows} == {
        "never": False,
        "rested": True,
        "rested_second_family": True,
        "ended": True,
        "followed_up": False,  # idlehook woke it after its rest was reported
        "answered_before": True,
        "seen_running_since": False,  # the routing step saw it running after the rest
        "started_last": False,
        "updated_after": True,
    }
    unsettled = watch.watched(engine, status_types=types, quiet_types=quiet, unsettled_only=True)
    assert [r.id for r in unsettled] == [r.id for r in rows if not r.settled]
    picked = watch.watched(engine, status_types=types, quiet_types=quiet, ids=["ended", "gone"])
    assert [(r.id, r.last_status_type) for r in picked] == [("ended", "session.status_terminated")]


def test_coverage_transition_time_and_ran_since_are_pure_rules() -> None:
    from types import SimpleNamespace

    from handlers.twins import covers
    from sessions.reap_io import StatusEvent
    from sessions.reconciler import ran_since, transition_at
    from store.delivered import SeenDelivery
    from store.watch import Watched

    t = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)
    second = timedelta(seconds=1)

    def seen(source: str, created: datetime, received: datetime) -> SeenDelivery:
        return SeenDelivery("e", "session.status_idled", source, received, created)

    # A synthetic delivery covers its own rest and none after it, however close; a webhook's
    # envelope may trail a little, and any webhook received after the rest covers it.
    assert covers([seen("reconcile", t, t + 10 * second)], "idle", t)
    assert not covers([seen("reconcile", t - second / 2, t + 10 * second)], "idle", t)
    assert covers([seen("webhook", t - second / 2, t - second)], "idle", t)
    assert covers([seen("webhook", t - 60 * second, t)], "idle", t)
    assert not covers([seen("webhook", t, t)], "running", t)

    session = SimpleNamespace(created_at=t - 60 * second, archived_at=None)
    assert transition_at("idle", StatusEvent("idle", t), session) == t
    assert transition_at("idle", None, session) == t - 60 * second  # never ran: since created
    assert transition_at("idle", StatusEvent("running", t), session) is None  # moved between
    assert transition_at("running", None, session) is None
    archived = SimpleNamespace(created_at=t - 60 * second, archived_at=t + second)
    assert transition_at("terminated", StatusEvent("idle", t), archived) == t + second

    row = Watched("s", t, "idle", 12.5, 0.25, True, "session.status_idled")

    def listed(status: str, active: float | None, cents: str | None) -> Any:
        cost = None if cents is None else SimpleNamespace(amount=cents, currency="USD")
        return SimpleNamespace(
            status=status, usage=SimpleNamespace(active_seconds=active, list_cost=cost)
        )

    assert not ran_since(row, listed("idle", 12.5, "25"))
    assert ran_since(row, listed("idle", 13.0, "25"))  # ran: runtime grew
    assert ran_since(row, listed("idle", 12.5, "30"))  # called the model: tokens grew
    assert ran_since(row, listed("terminated", 12.5, "25"))
    assert not ran_since(row, listed("idle", None, None))  # nothing to compare: no evidence
