"""Test a handler plugin against idlehook's emulator, through the real worker, with no internals.

    from idlehook import testing

    async def test_posts_the_result() -> None:
        async with testing.sink() as slack, testing.harness(
            SlackHandler, config={"webhook_url": slack.url}
        ) as h:
            run = await h.run(script="long:2")
        assert run.succeeded
        assert "Part 2." in slack.requests[0].json()["text"]

`harness` starts the emulator (a local Managed Agents API) in this event loop on loopback, and
a fresh SQLite store in a temporary directory. Each `run` creates an agent, an environment and a
session scripted by `script` (the emulator's scripts: `end_turn`, `long:N`, `tools`,
`requires_action`, `custom_tools`, `retries_exhausted`, `budget_reached`, `refusal`,
`terminate`, ...), waits for it to rest, stores its notification as the receiver would, and runs
the worker until that delivery is done: the routing step (which reads the session and its
transcript, as in production), then the plugin, once. A plugin class is built from `config`
exactly as at startup (its `Config` validates the table); a plugin that raises is dead-lettered
at once here (in production it is retried with backoff first). A plugin's optional
`async def aclose(self)` (handlers/api.py: the worker awaits it when it stops) is awaited once,
as the harness exits, after all its runs; a failure there is logged, as in production.

`sink` is an HTTP endpoint on loopback that records what it is sent: a stand-in for the service
a plugin posts to.
"""

import asyncio
import contextlib
import json
import socket
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import uvicorn
from anthropic import AsyncAnthropic
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from emulator import Emulator, EmulatorConfig, create_emulator
from handlers.api import Handler, HandlerContext, SharedConfig
from handlers.config import RouteRule, WorkerSettings
from handlers.events import NOTIFIED_AS
from handlers.plugin_config import shared_config
from handlers.registry import Registry, build
from handlers.worker import Worker
from idlehook.settings import Settings
from sessions.paced_transport import paced_http_client
from sessions.pacing import Pacer
from sessions.reconciler import envelope
from store.engine import make_engine, migrate
from store.ingest import NewDelivery, write_batch
from store.runs import RunStore
from store.sessions import SessionStore

__all__ = ["Harness", "PluginRun", "Received", "Sink", "harness", "sink"]

# The notification each resting status is delivered as (the webhook's own names).
_NOTIFIED = {status: NOTIFIED_AS[status] for status in ("idle", "terminated")}
# Emulated turns run this many times faster than their scripted seconds.
_SPEED = 200.0
# High enough that pacing, still on every call, never makes a test wait.
_RPM = 60_000


@dataclass(frozen=True)
class PluginRun:
    """What the plugin did for one delivery."""

    session_id: str
    event_type: str
    state: str  # "succeeded", or "dead" (it raised)
    error: str | None  # the run's last error, secrets masked, as `idlehook status` shows it
    # Every API call the plugin made through `ctx.client`, as "METHOD /path" (the routing
    # step's reads of the session and its transcript are not among them).
    calls: tuple[str, ...]
    saved: bool  # `ctx.record_saved` was called: the reaper counts the result as saved
    deleted: bool  # `ctx.record_deleted` was called

    @property
    def succeeded(self) -> bool:
        return self.state == "succeeded"


class _Probe:
    """The plugin under test, noting when it runs so its API calls can be told from routing's."""

    def __init__(self, plugin: Handler) -> None:
        self.name = plugin.name
        self.reads_only = bool(getattr(plugin, "reads_only", False))
        self.plugin = plugin
        self.active = False

    async def handle(self, ctx: HandlerContext) -> None:
        self.active = True
        try:
            await self.plugin.handle(ctx)
        finally:
            self.active = False

    async def aclose(self) -> None:
        close = getattr(self.plugin, "aclose", None)
        if callable(close):
            await close()


@dataclass
class Harness:
    """The emulator, a store and a worker running one plugin; see the module docstring."""

    plugin: Handler
    emulator_url: str
    client: AsyncAnthropic  # the worker's client: paced, pointed at the emulator
    config: SharedConfig  # what the plugin sees as `ctx.config`
    _worker: Worker
    _store: RunStore
    _sessions: SessionStore
    _probe: _Probe
    _calls: list[str] = field(default_factory=list)

    @property
    def results_dir(self) -> Path:
        return self.config.results_dir

    async def run(
        self,
        script: str = "end_turn",
        message: str = "hello",
        metadata: Mapping[str, str] | None = None,
        timeout: float = 30.0,
    ) -> PluginRun:
        """A new session scripted by `script`, run to rest, and the plugin run on its
        notification through the worker."""
        session_id = await self._rested_session(script, message, metadata or {}, timeout)
        session = await self.client.beta.sessions.retrieve(session_id)
        event_type = _NOTIFIED[session.status]
        delivery_id = await asyncio.to_thread(self._notify, session_id, event_type)
        self._calls.clear()
        await asyncio.wait_for(self._worker.run(drain=True), timeout)
        runs = await asyncio.to_thread(self._store.runs_for_delivery, delivery_id)
        mine = [r for r in runs if r.handler == self.plugin.name]
        if not mine:
            raise AssertionError(f"the routing step did not run {self.plugin.name!r}: {runs}")
        run = mine[-1]
        tracked = await asyncio.to_thread(self._sessions.get, session_id)
        saved = bool(
            tracked is not None
            and tracked.result_captured_at is not None
            and tracked.transcript_saved_at is not None
        )
        return PluginRun(
            session_id=session_id,
            event_type=event_type,
            state=str(run.state),
            error=run.last_error,
            calls=tuple(self._calls),
            saved=saved,
            deleted=tracked is not None and tracked.deleted_at is not None,
        )

    async def _rested_session(
        self, script: str, message: str, metadata: Mapping[str, str], timeout: float
    ) -> str:
        api = self.client
        agent = await api.beta.agents.create(name="harness", model="claude-sonnet-4-5")
        environment = await api.beta.environments.create(name="harness")
        session = await api.beta.sessions.create(
            agent=agent.id,
            environment_id=environment.id,
            metadata={**metadata, "emulator_script": script},
            initial_events=[
                {"type": "user.message", "content": [{"type": "text", "text": message}]}
            ],
        )
        deadline = time.monotonic() + timeout
        while (await api.beta.sessions.retrieve(session.id)).status not in _NOTIFIED:
            if time.monotonic() > deadline:
                raise TimeoutError(f"session {session.id} did not come to rest ({script!r})")
            await asyncio.sleep(0.02)
        return session.id

    def _notify(self, session_id: str, event_type: str) -> int:
        """Store the notification as the receiver's inbox does (with its `_route` run)."""
        now = datetime.now(UTC)
        event_id = f"wevt_harness_{uuid.uuid4().hex[:16]}"
        delivery = NewDelivery(
            event_id=event_id,
            event_type=event_type,
            resource_id=session_id,
            session_id=session_id,
            event_created_at=now,
            received_at=now,
            body=envelope(event_id, event_type, session_id, now),
        )
        (stored,) = write_batch(self._store.engine, [delivery], now)
        return stored.delivery_id


@contextlib.asynccontextmanager
async def harness(
    plugin: type[Any] | Handler,
    *,
    config: Mapping[str, Any] | None = None,
    results_dir: Path | None = None,
) -> AsyncIterator[Harness]:
    """The emulator, a store and a worker for `plugin`: a class, built with `config` (its
    `[plugins.<name>]` table) as at startup, or an instance (then no `config`)."""
    if isinstance(plugin, type):
        instance = build(plugin, str(getattr(plugin, "name", "")), config)
    else:
        if config is not None:
            raise TypeError("config is for a plugin class; an instance is already built")
        instance = plugin
    probe = _Probe(instance)
    with tempfile.TemporaryDirectory(prefix="idlehook-harness-") as tmp:
        settings = Settings.model_validate(
            {
                "api_key": "harness",
                "database_url": f"sqlite:///{tmp}/idlehook.db",
                "data_dir": tmp,
                "results_dir": results_dir or Path(tmp) / "results",
                "routes": [
                    RouteRule(
                        name="harness",
                        event_types=list(_NOTIFIED.values()),
                        handlers=[instance.name],
                    )
                ],
                "worker": WorkerSettings(max_attempts=1, poll_seconds=0.05),
                "create_rpm": _RPM,
                "read_rpm": _RPM,
            }
        )
        engine = make_engine(settings.database_url, pool_size=4)
        try:
            await asyncio.to_thread(migrate, engine)
            emu = Emulator(
                EmulatorConfig.model_validate({"speed": _SPEED, "rate_limits": {"enabled": False}})
            )
            calls: list[str] = []

            async def note(request: Any) -> None:
                if probe.active:
                    calls.append(f"{request.method} {request.url.path}")

            async with _serving(create_emulator(emulator=emu)) as url:
                http = paced_http_client(
                    Pacer(engine, rpm={"create": _RPM, "read": _RPM}),
                    event_hooks={"request": [note]},
                )
                async with AsyncAnthropic(
                    api_key="harness",
                    webhook_key="",
                    base_url=url,
                    max_retries=0,
                    http_client=http,
                ) as client:
                    store = RunStore(engine)
                    # Each `run` drains the worker; the plugin is closed once, at the end.
                    worker = Worker(store, Registry([probe]), client, settings, close_plugins=False)
                    try:
                        yield Harness(
                            plugin=instance,
                            emulator_url=url,
                            client=client,
                            config=shared_config(settings),
                            _worker=worker,
                            _store=store,
                            _sessions=SessionStore(engine),
                            _probe=probe,
                            _calls=calls,
                        )
                    finally:
                        await worker.close_plugins()
        finally:
            engine.dispose()


@dataclass(frozen=True)
class Received:
    """One request a `Sink` was sent."""

    method: str
    path: str
    headers: Mapping[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Sink:
    url: str
    requests: list[Received] = field(default_factory=list)
    status: int = 200  # what it answers; set it to make the plugin's call fail


@contextlib.asynccontextmanager
async def sink(status: int = 200) -> AsyncIterator[Sink]:
    """An HTTP endpoint on loopback, recording every request (any path, any method)."""
    holder: list[Sink] = []

    async def record(request: Request) -> Response:
        target = holder[0]
        target.requests.append(
            Received(
                method=request.method,
                path=request.url.path,
                headers=dict(request.headers),
                body=await request.body(),
            )
        )
        return Response(status_code=target.status)

    methods = ["GET", "POST", "PUT", "PATCH", "DELETE"]
    app = Starlette(routes=[Route("/{path:path}", record, methods=methods)])
    async with _serving(app) as url:
        holder.append(Sink(url=url, status=status))
        yield holder[0]


@contextlib.asynccontextmanager
async def _serving(app: Any) -> AsyncIterator[str]:
    """`app` served by uvicorn in this event loop on a free loopback port."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    config = uvicorn.Config(app, log_level="error", access_log=False, lifespan="on")
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        while not server.started:
            if task.done():
                task.result()
                raise RuntimeError("server stopped before it started")
            await asyncio.sleep(0.01)
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        await task
        sock.close()
