"""Every API call idlehook makes is paced through one budget, the worker's plugins' included:
the emulator on loopback, the real SDK, SQLite and PostgreSQL.

A plugin's calls through `ctx.client` are counted against the shared budget exactly; and 1,000
sessions finishing together (created, run to idle, an idle notification stored for each, then
the worker let loose on all of them at once with the default routes, archive and log) cost not
one 429 when idlehook's budget is the API's own limit. The emulator runs 60 times faster (its
minute is one real second), so its 333 requests per emulated minute are 19,980 per real minute,
and idlehook is given exactly that.
"""

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anthropic
import pytest
from sqlalchemy.engine import Engine

from emulator import Emulator, EmulatorConfig, create_emulator
from handlers.config import RouteRule, WorkerSettings
from handlers.registry import Registry
from handlers.worker import Worker
from idlehook import HandlerContext, wiring
from idlehook.settings import Settings
from sessions.paced_transport import rate_class
from store.engine import make_engine
from store.runs import RunStore
from tests.handlers.helpers import add_delivery
from tests.handlers.support import run_until
from tests.sessions.paced import paced_calls
from tests.support.servers import serve, wait_for

CLASSES = ("create", "read")


def rated(emu: Emulator) -> dict[str, int]:
    """Requests the emulator answered, by the class the API counts them in."""
    counts = dict.fromkeys(CLASSES, 0)
    for key, n in emu.requests.items():
        method, template = key.split(" ", 1)
        kind = rate_class(method, template)
        if kind is not None:
            counts[kind] += n
    return counts


def paced() -> dict[str, float]:
    return {k: paced_calls(k) for k in CLASSES}


def spent(before_rated: dict[str, int], before_paced: dict[str, float], emu: Emulator) -> Any:
    """(requests the emulator counted, requests idlehook paced) since the `before_` figures."""
    now_rated, now_paced = rated(emu), paced()
    return (
        {k: now_rated[k] - before_rated[k] for k in CLASSES},
        {k: int(now_paced[k] - before_paced[k]) for k in CLASSES},
    )


# -- a plugin's own calls ---------------------------------------------------------------------


class Caller:
    """A plugin that makes `n` API calls of its own, one through a copy of the client."""

    name = "caller"

    def __init__(self, n: int) -> None:
        self.n = n
        self.made = 0

    async def handle(self, ctx: HandlerContext) -> None:
        for _ in range(self.n - 1):
            await ctx.client.beta.sessions.retrieve(ctx.session_id)
            self.made += 1
        # Other options, same http client: a plugin cannot step around the budget by accident.
        quiet = ctx.client.with_options(max_retries=0, timeout=30)
        await quiet.beta.sessions.events.list(ctx.session_id, limit=5)
        self.made += 1


@pytest.fixture
def emulator() -> Iterator[tuple[Emulator, str]]:
    emu = Emulator(EmulatorConfig(speed=200.0, run_seconds=2.0))
    with serve(create_emulator(emulator=emu)) as url:
        yield emu, url


def finished_sessions(url: str, n: int) -> list[str]:
    setup = anthropic.Anthropic(api_key="k", base_url=url, max_retries=0)
    agent = setup.beta.agents.create(name="paced", model="claude-sonnet-4-6")
    env = setup.beta.environments.create(name="paced")
    ids = [
        setup.beta.sessions.create(
            agent=agent.id,
            environment_id=env.id,
            initial_events=[{"type": "user.message", "content": [{"type": "text", "text": "go"}]}],
        ).id
        for _ in range(n)
    ]
    wait_for(lambda: all(setup.beta.sessions.retrieve(s).status == "idle" for s in ids))
    setup.close()
    return ids


async def test_every_call_a_plugin_makes_is_counted_against_the_shared_budget(
    emulator: tuple[Emulator, str], db_url: str, tmp_path: Path
) -> None:
    emu, url = emulator
    ids = finished_sessions(url, 3)
    settings = Settings(
        api_key="k",
        base_url=url,
        database_url=db_url,
        results_dir=tmp_path / "results",
        routes=[RouteRule(name="calls", event_types=["session.status_idled"], handlers=["caller"])],
        worker=WorkerSettings(concurrency=4, poll_seconds=0.05),
    )
    engine = make_engine(db_url, pool_size=8)
    caller = Caller(n=4)
    try:
        store = RunStore(engine)
        for session_id in ids:
            add_delivery(engine, "session.status_idled", session_id)
        before_rated, before_paced = rated(emu), paced()
        async with wiring.api_client(settings, engine) as client:
            worker = Worker(store, Registry([caller]), client, settings)
            await run_until(worker, lambda: store.unfinished() == 0)
        answered, counted = spent(before_rated, before_paced, emu)
    finally:
        engine.dispose()

    assert caller.made == 4 * len(ids)
    # Routing's reads and the plugin's own: every one the emulator answered took a slot.
    assert counted == answered
    assert answered["read"] >= caller.made


# -- 1,000 sessions finishing together --------------------------------------------------------

SESSIONS = 1000
SPEED = 60.0
PER_EMULATED_MINUTE = 333
PER_REAL_MINUTE = int(PER_EMULATED_MINUTE * SPEED)  # 19,980


@pytest.mark.slow
@pytest.mark.timeout(900)  # minutes on a loaded 2-vCPU box: CPU-bound there, not paced
def test_a_thousand_sessions_finishing_together_cost_no_429(db_url: str, tmp_path: Path) -> None:
    emu = Emulator(
        EmulatorConfig(
            speed=SPEED,
            run_seconds=60.0,
            rate_limits={
                "create_per_minute": PER_EMULATED_MINUTE,
                "read_per_minute": PER_EMULATED_MINUTE,
            },
        )
    )
    with serve(create_emulator(emulator=emu), timeout_keep_alive=60) as url:
        setup = anthropic.Anthropic(api_key="k", base_url=url, max_retries=5)
        agent = setup.beta.agents.create(name="fleet", model="claude-sonnet-4-6").id
        env = setup.beta.environments.create(name="fleet").id
        setup.close()
        settings = Settings(
            api_key="k",
            base_url=url,
            database_url=db_url,
            results_dir=tmp_path / "results",
            owner="fleet",
            create_rpm=PER_REAL_MINUTE,
            read_rpm=PER_REAL_MINUTE,
            worker=WorkerSettings(concurrency=64, poll_seconds=0.05),
        )
        engine = make_engine(db_url, pool_size=16)
        try:
            emu.limiter.reset()  # the setup's calls spent nothing of the measured budget
            before_rated, before_paced = rated(emu), paced()
            asyncio.run(_create(settings, engine, agent, env))
            ids = list(emu.store.sessions)
            wait_for(lambda: all(emu.store.sessions[s].status == "idle" for s in ids), 60)
            # Every idle notification stored before the worker starts: all finish together.
            for session_id in ids:
                add_delivery(engine, "session.status_idled", session_id)
            asyncio.run(_drain(settings, engine))
            answered, counted = spent(before_rated, before_paced, emu)
        finally:
            engine.dispose()

    assert len(ids) == SESSIONS
    assert sum(emu.rate_limited.values()) == 0
    assert counted == answered
    assert answered["create"] == SESSIONS
    missing = [sid for sid in ids if not (settings.results_dir / sid / "result.json").exists()]
    assert missing == []


async def _create(settings: Settings, engine: Engine, agent: str, env: str) -> None:
    """Create them all at once (32 in flight), each with its first message."""
    room = asyncio.Semaphore(32)
    message = [{"type": "user.message", "content": [{"type": "text", "text": "go"}]}]

    async def one(client: anthropic.AsyncAnthropic) -> None:
        async with room:
            await client.beta.sessions.create(
                agent=agent,
                environment_id=env,
                initial_events=message,  # type: ignore[arg-type]
            )

    async with wiring.api_client(settings, engine) as client:
        await asyncio.gather(*(one(client) for _ in range(SESSIONS)))


async def _drain(settings: Settings, engine: Engine) -> None:
    async with wiring.api_client(settings, engine) as client:
        await wiring.worker(settings, engine, client).run(drain=True)
