"""Settings -> the real things: engine, API client, pacer, inbox, worker, launcher, reaper,
reconciler, app.

The only place that builds them; commands, the demo and tests of the whole service call these.
"""

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import structlog
from anthropic import AsyncAnthropic, DefaultAsyncHttpxClient
from sqlalchemy.engine import Engine

from console.approvals_api import approvals_routes
from console.budget_api import budget_routes
from console.followups_api import followup_routes
from console.recovery_api import recovery_routes
from console.session_page import session_routes
from console.sessions_api import sessions_routes
from console.web import web_routes
from handlers.api import HandlerContext, Notification
from handlers.builtin.answer import AnswerConfig, AnswerHandler
from handlers.builtin.archive import ArchiveConfig, ArchiveHandler
from handlers.builtin.archive_store import open_store
from handlers.durations import parse_duration
from handlers.events import STATUS_IDLED, STATUS_TYPES
from handlers.marking import interruption_reader, session_marker
from handlers.plugin_config import builtin_tables, plugin_tables, shared_config
from handlers.registry import Registry
from handlers.tools import confirm
from handlers.tools.registry import ToolRegistry
from handlers.worker import Worker
from idlehook import config_check, tracing
from idlehook.errors import ConfigError as ConfigError  # defined without the SDK; re-exported
from idlehook.loading import open_engine as open_engine  # re-exported: light, without the SDK
from idlehook.loading import settings_from_args as settings_from_args
from idlehook.settings import Settings
from receiver.app import ExtraLifespan, ReceiverApp, create_app
from receiver.config import ReceiverConfig
from receiver.request_id import RequestIdMiddleware
from sessions.endpoint import EndpointWatch
from sessions.launch_queue import LaunchDrainer
from sessions.launcher import Launcher
from sessions.metrics import record_api_response
from sessions.paced_transport import paced_http_client
from sessions.pacing import Pacer
from sessions.reap_policy import ReapPolicy
from sessions.reaper import Archiver, Reaper
from sessions.reconciler import Reconciler
from sessions.watchdog import Watchdog
from store.inbox import Inbox
from store.journal import Journal, store_key
from store.models import utcnow
from store.retention import KINDS as RETENTION_KINDS
from store.retention import PruneReport, RetentionPolicy, prune
from store.runs import RunStore
from store.sessions import SessionStore

log = structlog.get_logger(__name__)


def api_client(settings: Settings, engine: Engine, *, max_retries: int = 2) -> AsyncAnthropic:
    """A Managed Agents API client whose every request, the SDK's retries included, waits for
    its slot in the rate budget all processes share through `engine` (the worker's plugins,
    the launcher and the sweeps all get one of these, so none can spend the budget unseen)."""
    # The SDK's own http client (its defaults kept) on the paced transport, with a hook that
    # counts every response, retries and 429s included, for /metrics.
    http = paced_http_client(
        pacer(settings, engine), event_hooks={"response": [_count_api_response]}
    )
    return AsyncAnthropic(
        api_key=settings.api_key.get_secret_value() or "unset",
        # Not the SDK's default (ANTHROPIC_WEBHOOK_SIGNING_KEY from the environment): this client
        # reaches plugins as `ctx.client`, and verifying is the receiver's job, with its keyring.
        webhook_key="",
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
    """The plugins the routes name, and only those, from the `idlehook.handlers` entry points,
    each built with its own table (`[plugins.<name>]`; the built-ins' from their sections).
    Raises ConfigError when a table does not fit its plugin, or anything else in
    `config_check` that would fail silently (an unknown handler, event-type typo, tool module)."""
    config_check.require(settings)
    wanted = {name for rule in settings.routes for name in rule.handlers}
    try:
        tables = plugin_tables(settings)
        found = Registry.discover(allow=wanted - {AnswerHandler.name}, tables=tables)
    except ValueError as exc:  # PluginConfigError among them
        raise ConfigError(str(exc)) from None
    unused = sorted(set(settings.plugins) - wanted)
    if unused:
        # No route names them, so they are not loaded: a typo in a table's name shows here.
        log.warning("plugins.config_unused", tables=unused)
    handlers = [h for h in map(found.get, found.names()) if h is not None]
    if AnswerHandler.name in wanted:
        handlers.append(answer_handler(settings, engine))
    return Worker(RunStore(engine), Registry(handlers), client, settings)


def answer_handler(settings: Settings, engine: Engine) -> AnswerHandler:
    """The `answer` plugin on this engine, with the `[tools]` and `idlehook.tools` tools, its
    table validated like any plugin's."""
    config = AnswerConfig.model_validate(builtin_tables(settings)[AnswerHandler.name])
    tools = ToolRegistry.load(config.tools.modules, config.tools.idempotent)
    return AnswerHandler(config, engine=engine, tools=tools)


def launcher(settings: Settings, engine: Engine, client: AsyncAnthropic) -> Launcher:
    # Launch retries go through the durable queue, never the SDK: it sends no idempotency key.
    return Launcher(
        engine,
        client.with_options(max_retries=0),
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
    handler = ArchiveHandler(ArchiveConfig.model_validate(builtin_tables(settings)["archive"]))
    archive_log = structlog.get_logger("idlehook.reaper.archive")

    async def archive(session_id: str) -> None:
        notification = Notification(
            delivery_id=0,
            event_id=f"reaper_{session_id}",
            event_type=STATUS_IDLED,
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
            config=shared_config(settings),
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
    # Not paced: the organization webhooks API is not a Managed Agents API, and none of its
    # calls count against the create or read budget the pacer keeps; one read a sweep.
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
class Background:
    """The worker and the sweeps: what `idlehook serve`'s worker process runs (`idlehook worker
    --sweeps`), and what an in-process `service(run_worker=True)` runs in its lifespan."""

    worker: Worker
    drainer: LaunchDrainer
    periodic: list[Periodic]

    async def run(self) -> None:
        """Until `stop()`: then in-flight runs and sweeps finish. If one of them fails, the
        others are stopped and its error raised: a worker process exits, and `serve` starts
        another, rather than sweeping on without a worker."""
        tasks = [
            asyncio.create_task(self.worker.run()),
            asyncio.create_task(self.drainer.run()),
            *(asyncio.create_task(p.run()) for p in self.periodic),
        ]
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
        except asyncio.CancelledError:
            for task in tasks:
                task.cancel()
            raise
        self.stop()
        await asyncio.gather(*tasks, return_exceptions=True)
        failed = [t.exception() for t in done if not t.cancelled()]
        for error in failed:
            if error is not None:
                raise error

    def stop(self) -> None:
        """Stop claiming and sweeping (from the loop's thread; `worker.stop` is thread-safe)."""
        self.worker.stop()
        self.drainer.stopping.set()
        for p in self.periodic:
            p.stopping.set()


def background(
    settings: Settings, engine: Engine, client: AsyncAnthropic, the_launcher: Launcher | None = None
) -> Background:
    """The worker, the launch queue's drainer, the watchdog, the reconciler, the approvals sweep
    and, when scheduled, the reaper."""
    the_launcher = the_launcher or launcher(settings, engine, client)
    watchdog = Watchdog(engine, client, pricing=settings.pricing())
    periodic = [Periodic("watchdog", settings.watchdog_seconds, watchdog.sweep)]
    periodic.extend(_sweeps(settings, engine, client))
    periodic.append(approvals_sweep(settings, engine, client))
    return Background(worker(settings, engine, client), LaunchDrainer(the_launcher), periodic)


@dataclass
class Service:
    """What `idlehook serve` runs in its own process: the receiver (and, for tests and the demo,
    the worker and sweeps in-process with `run_worker`)."""

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
    on_new: Callable[[], None] | None = None,
    lifespan: ExtraLifespan | None = None,
    checked: bool = False,
) -> Service:
    """The receiver app with, if `run_worker`, the worker and sweeps in its lifespan.

    `idlehook serve` runs it without: its worker is a process of its own, started and stopped
    by `lifespan` and woken by `on_new` (idlehook/supervise.py); tests and the demo run the
    worker in-process. `checked`: the caller ran `config_check.require` already (serve does,
    before opening the store), so its warnings are not logged twice.
    """
    if not run_worker and not checked:  # refuse what its worker process would, at once
        config_check.require(settings)
    engine = engine or open_engine(settings)
    client = client or api_client(settings, engine)
    inbox = Inbox(engine)
    the_launcher = launcher(settings, engine, client)
    work = background(settings, engine, client, the_launcher) if run_worker else None

    @contextlib.asynccontextmanager
    async def in_process(_: ReceiverApp) -> AsyncIterator[None]:
        assert work is not None
        task = asyncio.create_task(work.run())
        try:
            yield
        finally:
            work.stop()
            await asyncio.gather(task, return_exceptions=True)

    app = create_app(
        ReceiverConfig.from_settings(settings),
        inbox,
        routes=[
            *sessions_routes(the_launcher, settings.api_token),
            *followup_routes(the_launcher, settings.api_token),
            *budget_routes(the_launcher, settings.api_token),
            *web_routes(
                engine,
                settings.api_token,
                billing_model=settings.billing_model,
                routes=settings.routes,
            ),
            *approvals_routes(engine, client, settings.api_token),
            *recovery_routes(engine, settings.api_token, settings.routes),
            *session_routes(
                engine,
                settings.api_token,
                results_dir=open_store(
                    settings.results_dir, settings.archive.url, settings.archive.storage_options
                ),
                pricing=settings.pricing(),
            ),
        ],
        lifespan=in_process if work is not None else lifespan,
        on_new=work.worker.wake if work is not None else on_new,
        journal=journal(settings),
        journal_drain_seconds=settings.journal.drain_seconds,
        # None unless [tracing]: spans go where this process's `tracing.configure` sent them.
        tracer=tracing.tracer(settings),
    )
    # Only the Starlette part passes through middleware; the webhook path is dispatched first.
    app.add_middleware(RequestIdMiddleware)
    if work is None:
        return Service(settings, engine, client, inbox, app, None, None, [])
    return Service(settings, engine, client, inbox, app, work.worker, work.drainer, work.periodic)


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
    """The reconciler and, when scheduled in config, the reaper and the retention sweep."""
    the_reconciler = reconciler(settings, engine, client)
    sweeps = [Periodic("reconcile", settings.reconcile.interval_seconds, the_reconciler.sweep)]
    every = settings.reaper.interval_seconds
    if every is not None:
        archive = (
            archiver(settings, engine, client) if settings.reaper.archive_before_delete else None
        )
        the_reaper = reaper(settings, engine, client, reap_policy(settings), archive)
        sweeps.append(Periodic("reap", every, lambda: the_reaper.run()))
    if settings.retention.interval_seconds is not None:
        sweeps.append(retention_sweep(settings, engine))
    return sweeps


def retention_policy(settings: Settings, older_than: str | None = None) -> RetentionPolicy:
    """The `[retention]` ages, or `older_than` for every kind. Raises DurationError."""
    cfg = settings.retention

    def age(kind: str) -> timedelta | None:
        text = older_than or getattr(cfg, kind)
        return None if text.strip().lower() == "never" else parse_duration(text)

    return RetentionPolicy(
        ages={kind: age(kind) for kind in RETENTION_KINDS},
        status_types=STATUS_TYPES,
        batch_size=cfg.batch_size,
    )


def retention_sweep(settings: Settings, engine: Engine) -> Periodic:
    """Delete old, finished history every `[retention] interval_seconds`."""
    policy = retention_policy(settings)

    async def run() -> PruneReport:
        report = await asyncio.to_thread(prune, engine, policy, utcnow())
        if report.total:
            log.info("retention.pruned", deleted=report.deleted, batches=report.batches)
        return report

    return Periodic("retention", settings.retention.interval_seconds or 3600.0, run)
