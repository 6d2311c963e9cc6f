"""One delivery, one read of its session: routing's, shared by the handlers, delete included
while it is fresh and nothing idlehook knows of woke the session since. Calls counted at the
SDK's HTTP client, against the emulator."""

import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from datetime import UTC, datetime, timedelta

import anthropic
import httpx
import pytest
import sqlalchemy as sa

from emulator.app import create_emulator
from emulator.config import EmulatorConfig
from emulator.core import Emulator
from handlers.builtin.archive import ArchiveHandler
from handlers.builtin.log import LogHandler
from handlers.config import RouteRule
from handlers.registry import Registry
from handlers.worker import Worker
from idlehook import HandlerContext
from idlehook.settings import Settings
from store import followups
from store.models import Delivery, HandlerRun
from store.runs import RunStore
from store.sessions import SessionStore
from tests.handlers.conftest import API_KEY, Sessions
from tests.handlers.helpers import add_delivery
from tests.handlers.support import builtins, run_until
from tests.support.servers import serve

IDLE = "session.status_idled"
MESSAGE = {"type": "user.message", "content": [{"type": "text", "text": "more"}]}


class Counted:
    """An SDK client whose every request is written down as "METHOD /path"."""

    def __init__(self) -> None:
        self.asked: list[str] = []

    async def _hook(self, request: httpx.Request) -> None:
        self.asked.append(f"{request.method} {request.url.path}")

    @asynccontextmanager
    async def client(self, url: str) -> AsyncIterator[anthropic.AsyncAnthropic]:
        http = anthropic.DefaultAsyncHttpxClient(event_hooks={"request": [self._hook]})
        async with anthropic.AsyncAnthropic(
            api_key=API_KEY, base_url=url, max_retries=0, http_client=http
        ) as client:
            yield client


@contextmanager
def emulator() -> Iterator[tuple[Emulator, str]]:
    emu = Emulator(EmulatorConfig(speed=200.0, run_seconds=2.0))
    with serve(create_emulator(emulator=emu)) as url:
        yield emu, url


def routes(settings: Settings, *handlers: str, reuse: float | None = None) -> Settings:
    rule = RouteRule(event_types=[IDLE], stop_reasons=["end_turn"], handlers=list(handlers))
    update: dict[str, object] = {"routes": [rule]}
    if reuse is not None:
        update["worker"] = settings.worker.model_copy(update={"reuse_reads_seconds": reuse})
    return settings.model_copy(update=update)


@pytest.mark.parametrize("reuse", [10.0, 0.0], ids=["fresh_read_reused", "window_zero"])
async def test_archive_then_delete_reads_the_session_once(
    store: RunStore, settings: Settings, reuse: float
) -> None:
    with emulator() as (_, url):
        sessions = Sessions(url)
        sid = sessions.finished(script="long:3")
        counted = Counted()
        async with counted.client(url) as client:
            config = routes(settings, "archive", "log", "delete", reuse=reuse)
            registry = Registry(builtins(config, "archive", "log", "delete"))
            worker = Worker(store, registry, client, config)
            add_delivery(store.engine, IDLE, sid)
            await run_until(worker, lambda: store.unfinished() == 0)
        with pytest.raises(anthropic.NotFoundError):
            sessions.api.beta.sessions.retrieve(sid)
        sessions.api.close()
    read = [f"GET /v1/sessions/{sid}", f"GET /v1/sessions/{sid}/events"]
    if reuse:
        # Routing's read serves archive, log and delete's "ran again?" check.
        assert counted.asked == [*read, f"DELETE /v1/sessions/{sid}"]
    else:
        assert counted.asked == [*read, *read, f"DELETE /v1/sessions/{sid}"]
    assert (settings.results_dir / sid / "result.json").exists()


class Wake:
    """A handler that claims to only read the session, but wakes it (a long turn), and leaves
    the trace idlehook would have of that: a sent follow-up, or a run-start webhook stored."""

    name = "wake"
    reads_only = True

    def __init__(self, emu: Emulator, store: RunStore, trace: str) -> None:
        self.emu = emu
        self.store = store
        self.trace = trace

    async def handle(self, ctx: HandlerContext) -> None:
        self.emu.apply_config({"run_seconds": 100_000.0})  # still running when delete runs
        await ctx.client.beta.sessions.events.send(ctx.session_id, events=[MESSAGE])  # type: ignore[list-item]
        engine, now = self.store.engine, datetime.now(UTC)
        if self.trace == "follow_up":
            token = uuid.uuid4().hex
            claim = followups.claim(
                engine,
                session_id=ctx.session_id,
                idempotency_key="k1",
                message="more",
                token=token,
                now=now,
                lease=timedelta(seconds=30),
            )
            row = claim.row.id
            lease = timedelta(seconds=30)
            assert followups.begin_send(
                engine, row, token, now=now, lease=lease, deadline=None, allowance_seconds=None
            )
            assert followups.mark_sent(
                engine, row, token, session_id=ctx.session_id, event_id=None, now=now
            )
        else:
            # The run-start webhook arrived (its routing waits behind this lane's runs).
            add_delivery(engine, "session.status_run_started", ctx.session_id)


@pytest.mark.parametrize("trace", ["follow_up", "run_started"])
async def test_delete_reads_again_when_idlehook_knows_the_session_woke(
    store: RunStore, settings: Settings, trace: str
) -> None:
    with emulator() as (emu, url):
        sessions = Sessions(url)
        sid = sessions.finished()
        counted = Counted()
        async with counted.client(url) as client:
            config = routes(settings, "wake", "delete")
            registry = Registry([Wake(emu, store, trace), *builtins(config, "delete")])
            worker = Worker(store, registry, client, config)
            delivery = add_delivery(store.engine, IDLE, sid)
            await run_until(worker, lambda: store.unfinished() == 0)
        status = sessions.api.beta.sessions.retrieve(sid).status
        sessions.api.close()
    assert status == "running"  # not deleted
    assert [r.state for r in store.runs_for_delivery(delivery)] == ["succeeded"] * 3
    assert f"DELETE /v1/sessions/{sid}" not in counted.asked
    # The fresh read was not trusted: delete read the session again.
    assert counted.asked.count(f"GET /v1/sessions/{sid}") == 2
    tracked = SessionStore(store.engine).get(sid)
    assert tracked is not None
    assert tracked.deleted_at is None


async def test_a_transition_no_rule_wants_costs_no_call(
    store: RunStore, settings: Settings
) -> None:
    """Default routes: run starts, creations, deletions are routed by type to nothing, without a
    call, even for a session the reconciler filled in (where a twin would be looked for)."""
    with emulator() as (_, url):
        sessions = Sessions(url)
        sid = sessions.finished()
        sessions.api.close()
        engine = store.engine
        synthetic = add_delivery(engine, IDLE, sid)
        with engine.begin() as conn:
            table = Delivery.__table__  # type: ignore[attr-defined]
            conn.execute(sa.update(table).where(table.c.id == synthetic).values(source="reconcile"))
        counted = Counted()
        async with counted.client(url) as client:
            worker = Worker(store, Registry([]), client, settings.model_copy(update={"routes": []}))
            await run_until(worker, lambda: store.unfinished() == 0)
            counted.asked.clear()
            worker = Worker(store, Registry([ArchiveHandler(), LogHandler()]), client, settings)
            for kind in ("session.status_run_started", "session.running", "session.created"):
                add_delivery(engine, kind, sid)
            add_delivery(engine, "session.deleted", sid)
            await run_until(worker, lambda: store.unfinished() == 0)
    assert counted.asked == []


async def test_a_run_start_routed_after_a_later_idle_was_stored_marks_nothing_busy(
    store: RunStore, settings: Settings
) -> None:
    """Behind a backlog the worker routes a run start after the session's idle is stored. That
    run start is old news: recorded as "running" now, it would make a rested session look woken
    to the reconciler (a read spent on it each sweep). Routed while still the latest, it counts."""
    engine = store.engine
    sessions = SessionStore(engine)
    # Nothing is routed, so nothing may be fetched: a closed port says so if anything tries.
    async with anthropic.AsyncAnthropic(
        api_key=API_KEY, base_url="http://127.0.0.1:9", max_retries=0
    ) as client:
        no_routes = settings.model_copy(update={"routes": []})
        add_delivery(engine, "session.status_run_started", "sesn_late")
        idle = add_delivery(engine, IDLE, "sesn_late")
        add_delivery(engine, "session.status_run_started", "sesn_now")
        # A late retry of an older idle webhook, stored after the run start: no news.
        add_delivery(engine, "session.status_run_started", "sesn_retry")
        retried = add_delivery(
            engine, IDLE, "sesn_retry", now=datetime.now(UTC) - timedelta(minutes=5)
        )
        # The idle is stored but its routing waits (the backlog): only the run starts route.
        runs = HandlerRun.__table__  # type: ignore[attr-defined]
        with engine.begin() as conn:
            later = datetime.now(UTC) + timedelta(hours=1)
            conn.execute(
                sa.update(runs)
                .where(runs.c.delivery_id.in_([idle, retried]))
                .values(next_attempt_at=later)
            )
        worker = Worker(store, Registry([]), client, no_routes)
        await run_until(worker, lambda: store.unfinished() == 2)
    late, now = sessions.get("sesn_late"), sessions.get("sesn_now")
    retry = sessions.get("sesn_retry")
    assert retry is not None
    assert retry.status == "running"
    assert late is not None
    assert now is not None
    assert late.status is None  # not "running": its idle is already stored
    assert now.status == "running"
