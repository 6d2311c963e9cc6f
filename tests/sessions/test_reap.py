"""The reaper against the emulator over loopback, with the real SDK, on SQLite and PostgreSQL."""

import asyncio
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import httpx2 as httpx
import pytest
from sqlmodel import Session

from emulator.control import billing_report
from handlers.billing import Pricing
from sessions.pacing import Pacer
from sessions.reap_policy import ReapPolicy
from sessions.reaper import Reaper
from sessions.reconciler import Reconciler
from store import reaper_actions
from store.engine import make_engine
from store.models import ReaperActionKind, TrackedSession
from tests.sessions.paced import paced_calls, paced_client
from tests.sessions.reaping import (
    LONG_RUN,
    OWNER,
    emulator,
    finish_runs,
    live_ids,
    mark_saved,
    new_session,
    past,
    pending_run,
    poll,
    refusing_transport,
    track,
)

# Resting sessions go once saved (idle_for 0), and an unsaved one is held, not archived: the
# guards these tests are about. The defaults (kept a day, archived first) have their own tests.
POLICY = ReapPolicy(
    owner=OWNER,
    exclude_metadata={"keep": "true"},
    idle_for=timedelta(0),
    archive_before_delete=False,
)


@pytest.fixture
def engine(db_url):
    engine = make_engine(db_url, pool_size=2)
    yield engine
    engine.dispose()


@pytest.fixture
def api():
    with emulator() as api:
        yield api


def deleted_at(engine, session_id):
    with Session(engine) as db:
        row = db.get(TrackedSession, session_id)
        return row.deleted_at if row is not None else None


async def test_reaps_every_kind_of_orphan_and_nothing_else(api, engine):
    async with api.client() as client:
        handled = await new_session(api, client)
        late = await new_session(api, client, metadata={"idlehook_deadline": past(60)})
        terminated = await new_session(api, client, script="terminate", wait_for="terminated")
        budget = await new_session(api, client, script="budget_reached")
        # Idle, kept longer by its launch (metadata), unsaved.
        fresh = await new_session(api, client, metadata={"idlehook_idle_for": "7d"})
        kept = await new_session(api, client, metadata={"keep": "true"})
        unowned = await new_session(api, client, owner=None)
        foreign = await new_session(api, client, owner="someone-else")
        ours_by_deployment, theirs_by_deployment = [
            await _deployment_session(api, client, name) for name in ("ours", "theirs")
        ]
        for session in (handled, late, terminated, budget, kept, foreign):
            track(engine, session.id, saved=True)
        for session in (unowned, ours_by_deployment, theirs_by_deployment):
            track(engine, session.id, saved=True, owner=None, launched_by_us=False)
        track(engine, fresh.id)
        policy = replace(POLICY, owned_deployments=frozenset({ours_by_deployment.deployment_id}))

        report = await Reaper(client, engine, policy).run()

    expected = {
        handled.id: "handled",
        late.id: "past_deadline",
        terminated.id: "terminated",
        budget.id: "handled",  # saved: a person had idle_for to raise it
        ours_by_deployment.id: "handled",
    }
    assert report.ok
    assert {o.session_id: o.reason for o in report.outcomes} == expected
    assert set(report.ids(ReaperActionKind.DELETED)) == set(expected)
    assert live_ids(api) == {fresh.id, kept.id, unowned.id, foreign.id, theirs_by_deployment.id}
    # Every other session examined is a kept row with its reason.
    assert {o.session_id: (o.action, o.reason) for o in report.kept} == {
        fresh.id: (ReaperActionKind.KEPT, "resting"),
        kept.id: (ReaperActionKind.KEPT, "excluded"),
        unowned.id: (ReaperActionKind.KEPT, "unowned"),
        foreign.id: (ReaperActionKind.KEPT, "foreign_owner"),
        theirs_by_deployment.id: (ReaperActionKind.KEPT, "unowned"),
    }
    assert report.examined == len(expected) + len(report.kept)
    for session_id in expected:
        assert deleted_at(engine, session_id) is not None
    assert deleted_at(engine, fresh.id) is None
    rows = reaper_actions.read(engine, run_id=report.run_id)
    assert {(r.session_id, r.action, r.dry_run) for r in rows} == {
        (sid, "deleted", False) for sid in expected
    }
    # As the API bills (runtime only while running), deleting resting sessions saves nothing.
    assert report.billing_model == "running"
    assert all(r.est_saving_usd_per_hour == 0.0 for r in rows)
    assert report.saving_usd_per_hour == 0.0


async def _deployment_session(api, client, name):
    deployment = await client.beta.deployments.create(
        name=name,
        agent=api.agent_id,
        environment_id=api.env_id,
        initial_events=[{"type": "user.message", "content": [{"type": "text", "text": "go"}]}],
    )
    run = await client.beta.deployments.run(deployment.id)
    assert run.session_id is not None

    async def idle():
        s = await client.beta.sessions.retrieve(run.session_id)
        return s if s.status == "idle" else None

    from tests.sessions.reaping import poll

    return await poll(idle)


async def test_unowned_only_with_include_unowned_and_max_age(api, engine):
    async with api.client() as client:
        unowned = await new_session(api, client, owner=None)
        for policy in (
            ReapPolicy(owner=OWNER, max_age=timedelta(0)),  # no switch
            ReapPolicy(owner=OWNER, include_unowned=True),  # no age
            ReapPolicy(owner=OWNER, include_unowned=True, max_age=timedelta(days=1)),  # young
        ):
            report = await Reaper(client, engine, policy).run()
            assert report.outcomes == []
        assert unowned.id in live_ids(api)

        policy = ReapPolicy(owner=OWNER, include_unowned=True, max_age=timedelta(0))
        report = await Reaper(client, engine, policy).run()

    assert report.ids(ReaperActionKind.DELETED) == [unowned.id]
    assert report.outcomes[0].reason == "unowned_max_age"
    assert unowned.id not in live_ids(api)


async def test_nothing_is_deleted_before_its_result_is_saved(api, engine):
    eager = ReapPolicy(owner=OWNER, idle_for=timedelta(0))
    async with api.client() as client:
        session = await new_session(api, client)
        track(engine, session.id)
        report = await Reaper(client, engine, eager).run()
        assert [(o.action, o.reason) for o in report.outcomes] == [
            (ReaperActionKind.SKIPPED, "result_not_saved")
        ]
        assert session.id in live_ids(api)

        # Told to archive first, it saves the session itself, then deletes it.
        archived: list[str] = []

        async def archive(session_id: str) -> None:
            archived.append(session_id)

        archiving = ReapPolicy(owner=OWNER, idle_for=timedelta(0), archive_before_delete=True)
        report = await Reaper(client, engine, archiving, archive=archive).run()

    assert archived == [session.id]
    assert [(o.action, o.reason) for o in report.outcomes] == [
        (ReaperActionKind.ARCHIVED, "idle_past_grace"),
        (ReaperActionKind.DELETED, "idle_past_grace"),
    ]
    assert session.id not in live_ids(api)


async def test_pending_handler_runs_block_the_delete(api, engine):
    async with api.client() as client:
        session = await new_session(api, client)
        track(engine, session.id, saved=True)
        pending_run(engine, session.id)
        report = await Reaper(client, engine, POLICY).run()

    assert [(o.action, o.reason) for o in report.outcomes] == [
        (ReaperActionKind.SKIPPED, "pending_handlers")
    ]
    assert session.id in live_ids(api)


async def test_dry_run_deletes_nothing_and_audits_what_it_would_do(api, engine):
    async with api.client() as client:
        sessions = [await new_session(api, client) for _ in range(2)]
        for session in sessions:
            track(engine, session.id, saved=True)
        before = api.requests("DELETE /v1/sessions/{id}")
        tutorial = replace(POLICY, pricing=Pricing("exists", 0.08))
        report = await Reaper(client, engine, tutorial).run(dry_run=True)

    assert api.requests("DELETE /v1/sessions/{id}") == before
    assert {s.id for s in sessions} <= live_ids(api)
    rows = reaper_actions.read(engine, run_id=report.run_id)
    assert sorted((r.session_id, r.action, r.reason, r.dry_run) for r in rows) == sorted(
        (s.id, "would_delete", "handled", True) for s in sessions
    )
    # Priced under the tutorial's model, as asked, and said so.
    assert report.billing_model == "exists"
    assert report.saving_usd_per_hour == pytest.approx(0.16)
    assert all(deleted_at(engine, s.id) is None for s in sessions)


@pytest.mark.parametrize("ran", [True, False], ids=["ran", "never_ran"])
async def test_a_saved_idle_session_costs_three_calls_to_delete(api, engine, ran):
    async with api.client() as client:
        # A session that never ran has no events: "read, none" must not be read again.
        sessions = [
            await new_session(
                api,
                client,
                run=ran,
                wait_for="idle" if ran else None,
                script="end_turn" if ran else None,
            )
            for _ in range(3)
        ]
        for session in sessions:
            track(engine, session.id, saved=True)
        routes = (
            "GET /v1/sessions/{id}/events",
            "GET /v1/sessions/{id}",
            "DELETE /v1/sessions/{id}",
        )
        before = {route: api.requests(route) for route in routes}

        report = await Reaper(client, engine, POLICY).run()

    used = {route: api.requests(route) - before[route] for route in routes}
    assert [o.action for o in report.outcomes] == [ReaperActionKind.DELETED] * 3
    # Per session: the latest event read once to choose, once more to check before deleting.
    assert used == {routes[0]: 6, routes[1]: 0, routes[2]: 3}
    assert not {s.id for s in sessions} & live_ids(api)


class Meeting(httpx.AsyncBaseTransport):
    """Lets requests through only once `parties` of them are waiting together, then freely."""

    def __init__(self, parties: int) -> None:
        self.inner = httpx.AsyncHTTPTransport()
        self.barrier = asyncio.Barrier(parties)
        self.met = False

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if not self.met:
            await self.barrier.wait()
            self.met = True
        return await self.inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self.inner.aclose()


async def test_sessions_are_judged_and_deleted_several_at_once(api, engine):
    async with api.client() as client:
        sessions = [await new_session(api, client) for _ in range(4)]
        for session in sessions:
            track(engine, session.id, saved=True)
        # The list call goes first, alone; then four sessions' reads must be waiting at once,
        # which a reaper judging one session at a time never gets to.
        plan = await Reaper(client, engine, POLICY, concurrency=4).plan()
    meeting = httpx.AsyncClient(transport=Meeting(4))
    async with api.client(http_client=meeting) as client:
        reaper = Reaper(client, engine, POLICY, concurrency=4)
        report = await asyncio.wait_for(reaper.execute(plan), timeout=10)

    assert [o.session_id for o in report.outcomes] == [s.id for s in sessions]  # plan order
    assert {o.action for o in report.outcomes} == {ReaperActionKind.DELETED}
    assert not {s.id for s in sessions} & live_ids(api)


async def test_a_session_changed_since_chosen_is_skipped(api, engine):
    async with api.client() as client:
        changed = await new_session(api, client)
        steady = await new_session(api, client)
        for session in (changed, steady):
            track(engine, session.id, saved=True)
        reaper = Reaper(client, engine, POLICY)
        plan = await reaper.plan()
        assert {c.view.id for c in plan.candidates} == {changed.id, steady.id}
        await client.beta.sessions.update(changed.id, metadata={"note": "touched"})

        report = await reaper.execute(plan)

    by_id = {o.session_id: (o.action, o.reason) for o in report.outcomes}
    assert by_id == {
        changed.id: (ReaperActionKind.SKIPPED, "changed_since_chosen"),
        steady.id: (ReaperActionKind.DELETED, "handled"),
    }
    assert changed.id in live_ids(api)


async def test_refused_delete_is_recorded_failing_and_retried_next_run(api, engine):
    async with api.client() as client:
        refused = await new_session(api, client)
        other = await new_session(api, client)
    for session in (refused, other):
        track(engine, session.id, saved=True)

    transport = refusing_transport({refused.id})
    async with api.client(http_client=httpx.AsyncClient(transport=transport)) as client:
        report = await Reaper(client, engine, POLICY).run()
    assert not report.ok
    by_id = {o.session_id: o for o in report.outcomes}
    assert by_id[refused.id].action is ReaperActionKind.REFUSED
    assert "409" in (by_id[refused.id].error or "")
    assert by_id[other.id].action is ReaperActionKind.DELETED
    assert refused.id in live_ids(api)
    assert deleted_at(engine, refused.id) is None
    row = next(r for r in reaper_actions.read(engine) if r.session_id == refused.id)
    assert (row.action, row.dry_run) == ("refused", False)
    assert "cannot be deleted" in (row.error or "")

    async with api.client() as client:
        again = await Reaper(client, engine, POLICY).run()
    assert again.ok
    assert again.ids(ReaperActionKind.DELETED) == [refused.id]
    assert refused.id not in live_ids(api)


async def test_running_past_deadline_is_interrupted_then_deleted_once_saved(api, engine):
    async with api.client() as client:
        session = await new_session(
            api,
            client,
            run_seconds=LONG_RUN,
            wait_for="running",
            metadata={"idlehook_deadline": past(5)},
        )
        track(engine, session.id)
        report = await Reaper(client, engine, POLICY, interrupt_wait_seconds=5).run()
        # Interrupted, now idle, but nothing has saved its result yet: left for the next run.
        assert [(o.action, o.reason) for o in report.outcomes] == [
            (ReaperActionKind.INTERRUPTED, "past_deadline"),
            (ReaperActionKind.SKIPPED, "result_not_saved"),
        ]
        assert (await client.beta.sessions.retrieve(session.id)).status == "idle"
        assert session.id in live_ids(api)

        mark_saved(engine, session.id)  # what the archive handler does on the idle webhook
        again = await Reaper(client, engine, POLICY).run()

    assert [(o.action, o.reason) for o in again.outcomes] == [
        (ReaperActionKind.DELETED, "past_deadline")
    ]
    assert session.id not in live_ids(api)


async def test_interrupt_and_delete_in_one_run_when_it_idles_in_time(api, engine):
    archived: list[str] = []

    async def archive(session_id: str) -> None:
        archived.append(session_id)

    archiving = ReapPolicy(owner=OWNER, archive_before_delete=True)
    async with api.client() as client:
        session = await new_session(
            api,
            client,
            run_seconds=LONG_RUN,
            wait_for="running",
            metadata={"idlehook_deadline": past(5)},
        )
        track(engine, session.id, saved=True)  # an earlier turn's save
        report = await Reaper(
            client, engine, archiving, archive=archive, interrupt_wait_seconds=5
        ).run()

    # The interrupted turn is newer than the save, so the reaper saves it before deleting.
    assert archived == [session.id]
    assert [o.action for o in report.outcomes] == [
        ReaperActionKind.INTERRUPTED,
        ReaperActionKind.ARCHIVED,
        ReaperActionKind.DELETED,
    ]
    assert session.id not in live_ids(api)


async def test_a_save_before_the_interrupt_does_not_cover_the_interrupted_turn(api, engine):
    async with api.client() as client:
        session = await new_session(
            api,
            client,
            run_seconds=LONG_RUN,
            wait_for="running",
            metadata={"idlehook_deadline": past(5)},
        )
        track(engine, session.id, saved=True)  # an earlier turn's save
        report = await Reaper(client, engine, POLICY, interrupt_wait_seconds=5).run()

    assert [(o.action, o.reason) for o in report.outcomes] == [
        (ReaperActionKind.INTERRUPTED, "past_deadline"),
        (ReaperActionKind.SKIPPED, "result_not_saved"),
    ]
    assert session.id in live_ids(api)


async def test_a_turn_after_the_last_save_is_not_saved_until_reconciled_and_archived(api, engine):
    eager = POLICY
    patient = replace(POLICY, idle_for=timedelta(minutes=15))
    async with api.client() as client:
        session = await new_session(api, client)
        track(engine, session.id, saved=True)  # turn 1 archived
        # Turn 2 runs to idle, and its webhook is dropped: the store still says "saved".
        api.emu.apply_config({"faults": {"drop_all": True}})
        await client.beta.sessions.events.send(
            session.id,
            events=[{"type": "user.message", "content": [{"type": "text", "text": "more"}]}],
        )
        await poll(lambda: _idled_twice(api, session.id))

        assert (await Reaper(client, engine, patient).run()).outcomes == []  # not "handled"
        report = await Reaper(client, engine, eager).run()
        assert [(o.action, o.reason) for o in report.outcomes] == [
            (ReaperActionKind.SKIPPED, "result_not_saved")
        ]
        assert session.id in live_ids(api)

        # The reconciler delivers turn 2's idle; until its handlers are done, hands off.
        swept = await Reconciler(client, engine, settle=timedelta(0)).sweep()
        assert len(swept.synthesised) == 1
        blocked = await Reaper(client, engine, eager).run()
        assert [o.reason for o in blocked.outcomes] == ["pending_handlers"]

        finish_runs(engine, session.id)  # what the worker does: route, then archive...
        mark_saved(engine, session.id)  # ...which saves turn 2
        final = await Reaper(client, engine, POLICY).run()

    assert [(o.action, o.reason) for o in final.outcomes] == [(ReaperActionKind.DELETED, "handled")]
    assert session.id not in live_ids(api)


async def _idled_twice(api, session_id: str) -> bool:
    record = api.emu.store.sessions[session_id]
    idles = [e for e in record.events if e["type"] == "session.status_idle"]
    return len(idles) >= 2 and record.status == "idle"


def test_pacing_keeps_deletes_under_the_rate_limit(sqlite_url):
    engine = make_engine(sqlite_url, pool_size=2)
    # Speed 60: the emulator's "minute" is one real second, so 20 reads/min is 20 per second.
    try:
        with emulator(speed=60.0, rate_limits={"read_per_minute": 20}) as api:
            asyncio.run(_paced_then_squeezed(api, engine))
    finally:
        engine.dispose()


async def _paced_then_squeezed(api, engine):
    async with api.client(max_retries=20) as client:  # setup only: let the SDK wait out 429s
        sessions = [await new_session(api, client) for _ in range(4)]
    for session in sessions:
        track(engine, session.id, saved=True)
    api.emu.limiter.reset()
    api.emu.rate_limited.clear()
    requests_before = sum(api.emu.requests.values())

    before = paced_calls("read")
    pacer = Pacer(engine, rpm={"create": 60, "read": 600})  # 10 per second: half the limit
    async with paced_client(api.url, pacer) as client:
        report = await Reaper(client, engine, POLICY).run()

    assert sum(api.emu.rate_limited.values()) == 0
    assert report.rate_limited == 0
    assert set(report.ids(ReaperActionKind.DELETED)) == {s.id for s in sessions}
    # Every request the reaper made took a slot in the shared budget.
    assert paced_calls("read") - before == sum(api.emu.requests.values()) - requests_before

    # A budget believed far above a (now tighter) limit: the 429s push the read class back by
    # the server's retry-after, the calls are retried behind that, and everything is deleted.
    async with api.client(max_retries=20) as client:
        more = [await new_session(api, client) for _ in range(2)]
    for session in more:
        track(engine, session.id, saved=True)
    api.emu.apply_config({"rate_limits": {"read_per_minute": 3}})
    api.emu.limiter.reset()
    api.emu.rate_limited.clear()
    async with paced_client(api.url, engine) as client:
        squeezed = await Reaper(client, engine, POLICY, max_rate_retries=50).run()
    assert squeezed.rate_limited > 0
    assert squeezed.rate_limited == sum(api.emu.rate_limited.values())
    assert squeezed.ok
    assert set(squeezed.ids(ReaperActionKind.DELETED)) == {s.id for s in more}


async def test_a_server_error_is_a_failure_not_a_refusal(api, sqlite_url):
    engine = make_engine(sqlite_url, pool_size=1)
    async with api.client() as client:
        session = await new_session(api, client)
    track(engine, session.id, saved=True)
    transport = refusing_transport({session.id}, status=500)
    async with api.client(http_client=httpx.AsyncClient(transport=transport)) as client:
        report = await Reaper(client, engine, POLICY).run()
    assert not report.ok
    assert [(o.action, o.reason) for o in report.outcomes] == [(ReaperActionKind.FAILED, "handled")]
    assert "500" in (report.outcomes[0].error or "")
    assert [r.action for r in reaper_actions.read(engine)] == ["failed"]
    assert session.id in live_ids(api)
    engine.dispose()


def _running_seconds(api, session_id: str) -> float:
    rows = {r["session_id"]: r for r in billing_report(api.emu)["sessions"]}
    return float(rows[session_id]["running_seconds"])


def _hours_later():
    # The emulator's clock runs 50x the wall clock: judge from well past its stamps.
    return datetime.now(UTC) + timedelta(hours=3)


async def test_a_runaway_is_interrupted_archived_and_deleted_and_stops_billing(api, engine):
    archived: list[str] = []

    async def archive(session_id: str) -> None:
        archived.append(session_id)
        mark_saved(engine, session_id)

    runaway = replace(POLICY, max_running=timedelta(hours=1), archive_before_delete=True)
    async with api.client() as client:
        session = await new_session(api, client, run_seconds=LONG_RUN, wait_for="running")
        track(engine, session.id)
        report = await Reaper(
            client, engine, runaway, archive=archive, now=_hours_later, interrupt_wait_seconds=5
        ).run()

    assert [(o.action, o.reason) for o in report.outcomes] == [
        (ReaperActionKind.INTERRUPTED, "max_running"),
        (ReaperActionKind.ARCHIVED, "max_running"),
        (ReaperActionKind.DELETED, "max_running"),
    ]
    interrupted = report.outcomes[0]
    assert interrupted.detail is not None
    assert interrupted.detail.startswith("running ")
    # The real saving under the documented model: a run billing $0.08/h stopped.
    assert report.billing_model == "running"
    assert report.saving_usd_per_hour == pytest.approx(0.08)
    assert archived == [session.id]
    assert session.id not in live_ids(api)
    billed = _running_seconds(api, session.id)
    await asyncio.sleep(0.2)  # 10 emulated seconds
    assert _running_seconds(api, session.id) == billed
    with Session(engine) as db:
        row = db.get(TrackedSession, session.id)
        assert row is not None
        assert row.interrupt_reason == "max_running"
        assert row.interrupted_at is not None


async def test_an_interrupted_runaway_is_kept_for_idle_for_like_a_finished_one(api, engine):
    runaway = replace(POLICY, max_running=timedelta(hours=1), idle_for=timedelta(days=1))
    async with api.client() as client:
        session = await new_session(api, client, run_seconds=LONG_RUN, wait_for="running")
        track(engine, session.id)
        report = await Reaper(
            client, engine, runaway, now=_hours_later, interrupt_wait_seconds=5
        ).run()
        current = await client.beta.sessions.retrieve(session.id)

    assert [(o.action, o.reason) for o in report.outcomes] == [
        (ReaperActionKind.INTERRUPTED, "max_running")
    ]
    assert current.status == "idle"  # stopped, not deleted: a person may follow up
    assert session.id in live_ids(api)


async def test_max_running_spares_short_runs_and_spends_no_read_on_young_sessions(api, engine):
    limited = replace(POLICY, max_running=timedelta(hours=1))
    async with api.client() as client:
        session = await new_session(api, client, run_seconds=LONG_RUN, wait_for="running")
        track(engine, session.id)
        before = api.requests("GET /v1/sessions/{id}/events")
        young = await Reaper(client, engine, limited).run()  # created seconds ago
        assert api.requests("GET /v1/sessions/{id}/events") == before
        # Its own launch limit is longer than the run so far, even judged hours later.
        await client.beta.sessions.update(session.id, metadata={"idlehook_max_running": "30d"})
        lenient = await Reaper(client, engine, limited, now=_hours_later).run()

    assert young.outcomes == []
    assert lenient.outcomes == []
    assert (await _status(api, session.id)) == "running"


async def test_dry_run_names_the_runaway_it_would_interrupt_and_leaves_it_running(api, engine):
    limited = replace(POLICY, max_running=timedelta(hours=1))
    async with api.client() as client:
        session = await new_session(api, client, run_seconds=LONG_RUN, wait_for="running")
        track(engine, session.id)
        report = await Reaper(client, engine, limited, now=_hours_later).run(dry_run=True)

    [outcome] = report.outcomes
    assert (outcome.session_id, outcome.action, outcome.reason) == (
        session.id,
        ReaperActionKind.WOULD_INTERRUPT,
        "max_running",
    )
    assert outcome.dry_run
    assert outcome.saving_usd_per_hour == pytest.approx(0.08)
    assert (await _status(api, session.id)) == "running"


async def _status(api, session_id: str) -> str:
    return str(api.emu.store.sessions[session_id].status)


async def test_a_runaway_busy_with_events_between_plan_and_act_is_still_interrupted(api, engine):
    # A run in progress adds events all the time; only having stopped by itself spares it.
    limited = replace(POLICY, max_running=timedelta(hours=1), idle_for=timedelta(days=1))
    async with api.client() as client:
        session = await new_session(api, client, run_seconds=LONG_RUN, wait_for="running")
        track(engine, session.id)
        reaper = Reaper(client, engine, limited, now=_hours_later, interrupt_wait_seconds=5)
        plan = await reaper.plan()
        await client.beta.sessions.events.send(
            session.id,
            events=[{"type": "user.message", "content": [{"type": "text", "text": "also"}]}],
        )
        report = await reaper.execute(plan)

    assert [(o.action, o.reason) for o in report.outcomes] == [
        (ReaperActionKind.INTERRUPTED, "max_running")
    ]
