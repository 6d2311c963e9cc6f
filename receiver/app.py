"""create_app(): the receiver as one ASGI app.

The webhook path is dispatched on `scope["path"]` before Starlette's router and middleware, so
the hot path pays for neither; everything else (health, metrics, whatever routes the caller
mounts) is plain Starlette. The lifespan starts and stops the inbox's batch writer.
"""

import asyncio
import contextlib
import functools
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AbstractAsyncContextManager
from datetime import datetime

import structlog
from opentelemetry.trace import Tracer
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute
from starlette.types import Receive, Scope, Send

from receiver import metrics, ops
from receiver.config import ReceiverConfig
from receiver.intake import WebhookIntake
from receiver.journal_metrics import JOURNAL as JOURNAL_METRICS
from receiver.keyring import GAUGES as KEY_GAUGES
from receiver.keyring import KeyRing
from store import sessions as sessions_store
from store import signing_keys
from store.inbox import Inbox
from store.journal import Journal
from store.journal_drain import JournalDrainer
from store.models import utcnow

log = structlog.get_logger(__name__)

ExtraLifespan = Callable[["ReceiverApp"], AbstractAsyncContextManager[None]]


class ReceiverApp(Starlette):
    """Starlette, except that the webhook path never enters the router."""

    intake: WebhookIntake

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] == self.intake.config.webhook_path:
            await self.intake(scope, receive, send)
            return
        await super().__call__(scope, receive, send)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    reason = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
    return JSONResponse({"error": reason}, status_code=exc.status_code, headers=exc.headers)


def create_app(
    config: ReceiverConfig,
    inbox: Inbox,
    *,
    now: Callable[[], datetime] = utcnow,
    routes: Sequence[BaseRoute] = (),
    lifespan: ExtraLifespan | None = None,
    on_new: Callable[[], None] | None = None,
    debug: bool = False,
    journal: Journal | None = None,
    journal_drain_seconds: float = 1.0,
    tracer: Tracer | None = None,
) -> ReceiverApp:
    """The receiver: webhook intake, /healthz, /readyz, /metrics, plus the caller's `routes`.

    `lifespan`, if given, runs inside ours: after the inbox writer starts, before it stops
    (the place for the worker, so it stops before the writer does). `on_new` is called after
    each new delivery commits (the in-process worker's `wake`). `journal`, if given, takes the
    verified deliveries the store cannot commit, and its drainer runs here (store/journal.py).
    """
    if inbox.on_batch is None:
        inbox.on_batch = metrics.BATCH_SIZE.observe

    def unsaved() -> int:
        return sessions_store.unsaved_outcomes(inbox.engine, limit=0)[0]

    @contextlib.asynccontextmanager
    async def run(app: Starlette) -> AsyncIterator[None]:
        assert isinstance(app, ReceiverApp)
        await inbox.start()
        metrics.INBOX_DEPTH.attach(inbox.depth)
        metrics.UNSAVED_OUTCOMES.attach(unsaved)
        # The stored signing keys before the first request (a restarted receiver must not
        # refuse what it accepted before), then every few seconds off the hot path.
        await keys.refresh()
        if not keys.current:
            log.warning("receiver.no_signing_keys")  # every delivery will be refused with 401
        KEY_GAUGES.attach(keys)
        keys_stopping = asyncio.Event()
        keys_task = asyncio.create_task(keys.run(keys_stopping))
        drain = contextlib.AsyncExitStack()
        if journal is not None:
            # The drainer's commits show the store takes writes again (readiness).
            store_ok = functools.partial(setattr, app.intake, "store_failing", False)
            await drain.enter_async_context(
                _draining(journal, inbox, on_new, journal_drain_seconds, store_ok)
            )
        try:
            if lifespan is None:
                yield
            else:
                async with lifespan(app):
                    yield
        finally:
            keys_stopping.set()
            keys_task.cancel()  # not waited for: a reload may hang on a store that is down
            await asyncio.gather(keys_task, return_exceptions=True)
            KEY_GAUGES.detach(keys)
            metrics.INBOX_DEPTH.detach(inbox.depth)
            metrics.UNSAVED_OUTCOMES.detach(unsaved)
            await drain.aclose()
            await app.intake.rejections.close()  # counted since the last flush
            await inbox.stop()

    app = ReceiverApp(
        debug=debug,
        routes=[*ops.routes(), *routes],
        exception_handlers={HTTPException: _http_error},
        lifespan=run,
    )
    keys = KeyRing(
        config.signing_keys,
        functools.partial(signing_keys.verifying, inbox.engine),
        now=now,
        every=config.key_refresh_seconds,
    )
    app.intake = WebhookIntake(
        config, inbox, now, on_new, keys=keys, journal=journal, tracer=tracer
    )
    app.state.inbox = inbox
    app.state.journal = journal
    app.state.config = config
    return app


# A drain pass may be waiting on a store that is down; stopping waits this long for it.
_DRAIN_STOP_SECONDS = 10.0


@contextlib.asynccontextmanager
async def _draining(
    journal: Journal,
    inbox: Inbox,
    on_new: Callable[[], None] | None,
    every: float,
    on_moved: Callable[[], None],
) -> AsyncIterator[None]:
    """The journal's drainer, running for as long as the receiver does; on the way out the
    journal lets go of its files (what is left in them waits for the next receiver)."""
    drainer = JournalDrainer(journal, inbox.engine, on_new=on_new, on_moved=on_moved, every=every)
    JOURNAL_METRICS.attach(journal, drainer)
    task = asyncio.create_task(drainer.run())
    try:
        yield
    finally:
        drainer.stop()
        # A pass cut short leaves its segment in place: drained again later, as duplicates.
        with contextlib.suppress(TimeoutError, asyncio.CancelledError):
            await asyncio.wait_for(task, _DRAIN_STOP_SECONDS)
        JOURNAL_METRICS.detach(journal)
        journal.close()
