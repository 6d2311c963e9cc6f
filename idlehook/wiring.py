"""Settings -> the real things: engine, API client, pacer, inbox, worker, launcher, reaper,
reconciler, app.

The only place that builds them; commands, the demo and tests of the whole service call these.
"""

import argparse
import asyncio
import contextlib
import tomllib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import structlog
from anthropic import AsyncAnthropic, DefaultAsyncHttpxClient
from pydantic import ValidationError
from sqlalchemy.engine import Engine

from handlers.api import HandlerContext, Notification
from handlers.builtin.answer import AnswerHandler
from handlers.builtin.archive import ArchiveHandler
from handlers.marking import interruption_reader, session_marker
from handlers.registry import Registry
from handlers.tools import confirm
from handlers.tools.registry import ToolRegistry
from handlers.worker import Worker
from idlehook.logs import configure_logging
from idlehook.settings import Settings
from receiver.app import ReceiverApp, create_app
from receiver.approvals_api import approvals_routes
from receiver.budget_api import budget_routes
from receiver.config import ReceiverConfig
from receiver.followups_api import followup_routes
from receiver.request_id import RequestIdMiddleware
from receiver.sessions_api import sessions_routes
from receiver.web import web_routes
from sessions.durations import parse_duration
from sessions.endpoint import EndpointWatch
from sessions.launch_queue import LaunchDrainer
from sessions.launcher import Launcher
from sessions.metrics import record_api_response
from sessions.pacing import Pacer
from sessions.reap_policy import ReapPolicy
from sessions.reaper import Archiver, Reaper
from sessions.reconciler import Reconciler
from sessions.watchdog import Watchdog
from store.engine import make_engine, migrate
from store.inbox import Inbox
from store.journal import Journal, store_key
from store.models import utcnow
from store.runs import RunStore
from store.sessions import SessionStore

log = structlog.get_logger(__name__)


class ConfigError(Exception):
    """The configuration cannot be used; the message says what to fix."""


def _explain(exc: Exception) -> str:
    if isinstance(exc, ValidationError):
        return "; ".join(
            f"{'.'.join(map(str, e['loc'])) or 'config'}: {e['msg']}" for e in exc.errors()
        )
    return str(exc)


def settings_from_args(args: argparse.Namespace, **overrides: Any) -> Settings:
    """Settings for a command, and logging configured to match them."""
    config = getattr(args, "config", None)
    try:
        settings = Settings.load(config=Path(config) if config else None, **overrides)
    except (ValidationError, FileNotFoundError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(_explain(exc)) from None
    if settings.json_logs is not None and not getattr(args, "log_json", None):
        # The config file chose the format; main() has already sent logs to stderr.
        configure_logging(json=settings.json_logs, cache=False)
    return settings


def open_engine(settings: Settings, *, pool_size: int = 10) -> Engine:
    """The engine, with the schema brought up to date (idempotent)."""
    engine = make_engine(settings.database_url, pool_size=pool_size)
    migrate(engine)
    return engine


def api_client(settings: Settings, *, max_retries: int = 2) -> AsyncAnthropic:
    # The SDK's own http client class (its defaults kept), with a hook that counts every
    # response, retries and 429s included, for /metrics.
    http = DefaultAsyncHttpxClient(event_hooks={"response": [_count_api_response]})
    return AsyncAnthropic(
        api_key=settings.api_key.get_secret_value() or "unset",
        base_url=settings.base_url,
        max_retries=max_retries,
        http_client=http,
    )


async def _count_api_response(response: Any) -> None:
    request = response.request
    record_api_response(request.method, request.url.path, response.status_code)


def pacer(settings: Settings, engine: Engine) -> Pacer:
    return Pacer(engine, rpm={"create": settings.create_rpm, "read": settings.read_rpm})


def worker(settings: Settings, engine: Engine, client: AsyncAnthropic) -> Worker:
    """The plugins the routes name, and only those, from the `idlehook.handlers` entry points."""
    wanted = {name for rule in settings.routes for name in rule.handlers}
    found = Registry.discover(allow=wanted - {AnswerHandler.name})
    handlers = [h for h in map(found.get, found.names()) if h is not None]
    if AnswerHandler.name in wanted:
        handlers.append(answer_handler(settings, engine))
    return Worker(RunStore(engine), Registry(handlers), client, settings)


def answer_handler(settings: Settings, engine: Engine) -> AnswerHandler:
    """The `answer` plugin on this engine, with the `[tools]` and `idlehook.tools` tools."""
    tools = ToolRegistry.load(settings.tools.modules, settings.tools.idempotent)
    return AnswerHandler(engine, tools)


def launcher(settings: Settings, engine: Engine, client: AsyncAnthropic) -> Launcher:
    # Launch retries go through the durable queue, never the SDK: it sends no idempotency key.
    return Launcher(
        engine,
        client.with_options(max_retries=0),
        pacer(settings, engine),
        owner=settings.owner,
        strict=settings.strict,
        budget_usd=settings.launch.budget_usd,
        priced_models=settings.launch.priced_models,
    )


def reap_policy(
    settings: Settings,
    *,
    idle_for: str | None = None,
    max_age: str | None = None,
    include_unowned: bool = False,
) -> ReapPolicy:
    """The `[reaper]` policy, with a command's flags over it. Raises DurationError on bad flags."""
    cfg = settings.reaper
    age = max_age or cfg.max_age
    return ReapPolicy(
        owner=settings.owner,
        idle_for=parse_duration(idle_for or cfg.idle_for),
        include_unowned=include_unowned or cfg.include_unowned,
        max_age=parse_duration(age) if age else None,
        owned_deployments=frozenset(cfg.owned_deployments),
        exclude_metadata=dict(cfg.exclude_metadata),
        archive_before_delete=cfg.archive_before_delete,
        max_running=parse_duration(cfg.max_running) if cfg.max_running else None,
        pricing=settings.pricing(),
    )


def archiver(
    settings: Settings,
    engine: Engine,
    client: AsyncAnthropic,
    now: Callable[[], datetime] = utcnow,
) -> Archiver:
    """The archive plugin's own code, run by the reaper on a session nothing has saved yet."""
    store = SessionStore(engine)
    mark = session_marker(store, now)
    interruption = interruption_reader(store)
    handler = ArchiveHandler(settings.results_dir)
    archive_log = structlog.get_logger("idlehook.reaper.archive")

    async def archive(session_id: str) -> None:
        notification = Notification(
            delivery_id=0,
            event_id=f"reaper_{session_id}",
            event_type="session.status_idled",
            resource_id=session_id,
            session_id=session_id,
            source="reaper",
            received_at=now(),
        )
        ctx = HandlerContext(
            event=notification,
            client=client,
            log=archive_log.bind(session_id=session_id),
            now=now,
            settings=settings,
            handler=handler.name,
            mark=mark,
            interruption=interruption,
        )
        await handler.handle(ctx)

    return archive


def reaper(
    settings: Settings,
    engine: Engine,
    client: AsyncAnthropic,
    policy: ReapPolicy,
    archive: Archiver | None = None,
) -> Reaper:
    return Reaper(
        client,
        engine,
        policy,
        gate=pacer(settings, engine),
        archive=archive,
        lookback=parse_duration(settings.reaper.lookback),
        interrupt_wait_seconds=settings.reaper.interrupt_wait_seconds,
        concurrency=settings.reaper.concurrency,
    )


def reconciler(settings: Settings, engine: Engine, client: AsyncAnthropic) -> Reconciler:
    cfg = settings.reconcile
    return Reconciler(
        client,
        engine,
        gate=pacer(settings, engine),
        lookback=parse_duration(cfg.lookback),
        settle=timedelta(seconds=cfg.settle_seconds),
        silence_alarm=timedelta(seconds=cfg.silence_alarm_seconds),
        max_calls=cfg.max_calls_per_sweep,
        scan_pages=cfg.scan_pages_per_sweep,
        endpoint=endpoint_watch(settings, engine),
    )


def endpoint_watch(settings: Settings, engine: Engine) -> EndpointWatch | None:
    """The webhook endpoint's state, read with the admin key each sweep; None without one."""
    cfg = settings.reconcile
    if settings.admin_api_key is None or not settings.admin_api_key.get_secret_value():
        return None
    if not cfg.endpoint_url and not cfg.endpoint_id:
        log.warning(
            "reconcile.endpoint_unnamed",
            hint="an admin key is set but neither [reconcile] endpoint_url nor endpoint_id: "
            "the webhook endpoint's state is not read",
        )
        return None
    admin = AsyncAnthropic(
        api_key=settings.admin_api_key.get_secret_value(),
        base_url=settings.base_url,
        max_retries=2,
        http_client=DefaultAsyncHttpxClient(event_hooks={"response": [_count_api_response]}),
    )
    return EndpointWatch(admin, engine, url=cfg.endpoint_url, endpoint_id=cfg.endpoint_id)


@dataclass
class Periodic:
    """A sweep run every `every` seconds until stopped; a failing sweep is logged, not fatal."""

    name: str
    every: float
    sweep: Callable[[], Awaitable[Any]]
    stopping: asyncio.Event = field(default_factory=asyncio.Event)

    async def run(self) -> None:
        while not self.stopping.is_set():
            try:
                await self.sweep()
            except Exception as exc:  # a sweep must not take the service down
                log.warning("periodic.failed", task=self.name, error=repr(exc)[:300])
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stopping.wait(), timeout=self.every)


@dataclass
class Service:
    """Everything `idlehook serve` runs in one process."""

    settings: Settings
    engine: Engine
    client: AsyncAnthropic
    inbox: Inbox
    app: ReceiverApp
    worker: Worker | None
    drainer: LaunchDrainer | None
    periodic: list[Periodic]


def service(
    settings: Settings,
    *,
    run_worker: bool = True,
    engine: Engine | None = None,
    client: AsyncAnthropic | None = None,
) -> Service:
    """The receiver app with, unless `run_worker` is off, the worker and sweeps in its lifespan."""
    engine = engine or open_engine(settings)
    client = client or api_client(settings)
    inbox = Inbox(engine)
    the_launcher = launcher(settings, engine, client)
    the_worker = worker(settings, engine, client) if run_worker else None
    drainer = LaunchDrainer(the_launcher) if run_worker else None
    periodic: list[Periodic] = []
    if run_worker:
        watchdog = Watchdog(engine, client, pacer(settings, engine), pricing=settings.pricing())
        periodic.append(Periodic("watchdog", settings.watchdog_seconds, watchdog.sweep))
        periodic.extend(_sweeps(settings, engine, client))
        periodic.append(approvals_sweep(settings, engine, client))

    @contextlib.asynccontextmanager
    async def background(_: ReceiverApp) -> AsyncIterator[None]:
        tasks: list[asyncio.Task[Any]] = []
        if the_worker is not None:
            tasks.append(asyncio.create_task(the_worker.run()))
        if drainer is not None:
            tasks.append(asyncio.create_task(drainer.run()))
        tasks.extend(asyncio.create_task(p.run()) for p in periodic)
        try:
            yield
        finally:
            if the_worker is not None:
                the_worker.stop()
            if drainer is not None:
                drainer.stopping.set()
            for p in periodic:
                p.stopping.set()
            await asyncio.gather(*tasks, return_exceptions=True)

    app = create_app(
        ReceiverConfig.from_settings(settings),
        inbox,
        routes=[
            *sessions_routes(the_launcher, settings.api_token),
            *followup_routes(the_launcher, settings.api_token),
            *budget_routes(the_launcher, settings.api_token),
            *web_routes(engine, settings.api_token, billing_model=settings.billing_model),
            *approvals_routes(engine, client, settings.api_token),
        ],
        lifespan=background,
        on_new=the_worker.wake if the_worker is not None else None,
        journal=journal(settings),
        journal_drain_seconds=settings.journal.drain_seconds,
    )
    # Only the Starlette part passes through middleware; the webhook path is dispatched first.
    app.add_middleware(RequestIdMiddleware)
    return Service(settings, engine, client, inbox, app, the_worker, drainer, periodic)


def journal(settings: Settings) -> Journal | None:
    """The receiver's local journal for deliveries the store cannot commit (None: off)."""
    if not settings.journal.enabled:
        return None
    store = store_key(settings.database_url)
    return Journal(settings.journal_dir(), settings.journal.max_bytes, store=store)


def approvals_sweep(settings: Settings, engine: Engine, client: AsyncAnthropic) -> Periodic:
    """Deny approvals nobody answered in time; resend decisions whose send failed."""

    async def run() -> Any:
        return await confirm.sweep(engine, client, settings.approvals, utcnow())

    return Periodic("approvals", settings.approvals.sweep_seconds, run)


def _sweeps(settings: Settings, engine: Engine, client: AsyncAnthropic) -> list[Periodic]:
    """The reconciler and, when scheduled in config, the reaper."""
    the_reconciler = reconciler(settings, engine, client)
    sweeps = [Periodic("reconcile", settings.reconcile.interval_seconds, the_reconciler.sweep)]
    every = settings.reaper.interval_seconds
    if every is not None:
        archive = (
            archiver(settings, engine, client) if settings.reaper.archive_before_delete else None
        )
        the_reaper = reaper(settings, engine, client, reap_policy(settings), archive)
        sweeps.append(Periodic("reap", every, lambda: the_reaper.run()))
    return sweeps
