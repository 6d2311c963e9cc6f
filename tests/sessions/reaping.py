"""Shared by the reaper and reconciler tests: an emulator on loopback, sessions in known states,
tracked rows, and HTTP-edge fakes (a refusing transport, a request counter)."""

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx2 as httpx  # the SDK's own HTTP package (a fork of httpx)
from anthropic import AsyncAnthropic
from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from emulator.app import create_emulator
from emulator.config import EmulatorConfig
from emulator.core import Emulator
from store.models import Delivery, HandlerRun, RunState, TrackedSession
from tests.support.servers import serve

OWNER = "idlehook-test"
LONG_RUN = "100000"  # emulated seconds: a turn that stays running for the whole test


@dataclass
class Api:
    url: str
    emu: Emulator
    agent_id: str
    env_id: str

    def client(self, max_retries: int = 0, **kw: Any) -> AsyncAnthropic:
        return AsyncAnthropic(api_key="sk-test", base_url=self.url, max_retries=max_retries, **kw)

    def requests(self, key: str) -> int:
        return self.emu.requests[key]


@contextmanager
def emulator(**config: Any) -> Iterator[Api]:
    cfg = EmulatorConfig(**{"speed": 50.0, "run_seconds": 0.5, **config})
    emu = Emulator(cfg)
    with serve(create_emulator(emulator=emu)) as url:
        api = Api(url, emu, "", "")
        asyncio.run(_bootstrap(api))
        yield api


async def _bootstrap(api: Api) -> None:
    async with api.client() as client:
        agent = await client.beta.agents.create(name="reaper-test", model="claude-sonnet-4-6")
        env = await client.beta.environments.create(name="reaper-test")
    api.agent_id, api.env_id = agent.id, env.id


async def poll(check: Callable[[], Awaitable[Any]], timeout: float = 15.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = await check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        await asyncio.sleep(0.02)


async def new_session(
    api: Api,
    client: AsyncAnthropic,
    *,
    owner: str | None = OWNER,
    script: str | None = "end_turn",
    run: bool = True,
    wait_for: str | None = "idle",
    metadata: dict[str, str] | None = None,
    run_seconds: str | None = None,
) -> Any:
    meta = dict(metadata or {})
    if owner is not None:
        meta["idlehook_owner"] = owner
    if script is not None:
        meta["emulator_script"] = script
    if run_seconds is not None:
        meta["emulator_run_seconds"] = run_seconds
    initial = [{"type": "user.message", "content": [{"type": "text", "text": "go"}]}] if run else []
    session = await client.beta.sessions.create(
        agent=api.agent_id,
        environment_id=api.env_id,
        metadata=meta,
        initial_events=initial,  # type: ignore[arg-type]
    )
    if wait_for is not None:

        async def reached() -> Any:
            current = await client.beta.sessions.retrieve(session.id)
            return current if current.status == wait_for else None

        session = await poll(reached)
    return session


def track(
    engine: Engine,
    session_id: str,
    *,
    saved: bool = False,
    owner: str | None = OWNER,
    launched_by_us: bool = True,
    now: datetime | None = None,
) -> None:
    now = now or datetime.now(UTC)
    with Session(engine) as db:
        db.add(
            TrackedSession(
                id=session_id,
                owner=owner,
                launched_by_us=launched_by_us,
                result_captured_at=now if saved else None,
                transcript_saved_at=now if saved else None,
                first_seen_at=now,
                updated_at=now,
            )
        )
        db.commit()


def mark_saved(engine: Engine, session_id: str) -> None:
    now = datetime.now(UTC)
    with Session(engine) as db:
        row = db.get(TrackedSession, session_id)
        assert row is not None
        row.result_captured_at = row.transcript_saved_at = now
        db.add(row)
        db.commit()


def pending_run(engine: Engine, session_id: str) -> None:
    """An unfinished handler run in the session's lane, as ingest would leave one."""
    now = datetime.now(UTC)
    with Session(engine) as db:
        delivery = Delivery(
            event_id=f"wevt_pending_{session_id}",
            event_type="session.status_idled",
            resource_id=session_id,
            session_id=session_id,
            event_created_at=now,
            received_at=now,
            body="{}",
        )
        db.add(delivery)
        db.flush()
        assert delivery.id is not None
        db.add(
            HandlerRun(
                delivery_id=delivery.id,
                lane=session_id,
                handler="archive",
                position=1,
                state=RunState.FAILED,
            )
        )
        db.commit()


def finish_runs(engine: Engine, session_id: str) -> None:
    """Mark the session lane's handler runs done, as the worker would once it ran them."""
    with Session(engine) as db:
        for run in db.exec(select(HandlerRun).where(HandlerRun.lane == session_id)):
            run.state = RunState.SUCCEEDED
            db.add(run)
        db.commit()


def live_ids(api: Api) -> set[str]:
    return {s.id for s in api.emu.store.sessions.values() if not s.deleted}


def refusing_transport(refuse: set[str], status: int = 409) -> httpx.AsyncBaseTransport:
    """The real HTTP transport, except DELETE of the given sessions answers a refusal."""
    real = httpx.AsyncHTTPTransport()

    class Refusing(httpx.AsyncBaseTransport):
        async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
            last = request.url.path.rsplit("/", 1)[-1]
            if request.method == "DELETE" and last in refuse:
                return httpx.Response(
                    status,
                    json={
                        "type": "error",
                        "error": {
                            "type": "invalid_request_error",
                            "message": f"session {last} cannot be deleted right now",
                        },
                        "request_id": "req_fake",
                    },
                    headers={"request-id": "req_fake"},
                )
            return await real.handle_async_request(request)

        async def aclose(self) -> None:
            await real.aclose()

    return Refusing()


def past(seconds: float) -> str:
    when = datetime.now(UTC) - timedelta(seconds=seconds)
    return when.strftime("%Y-%m-%dT%H:%M:%SZ")
