"""create_app(): the receiver as one ASGI app.

The webhook path is dispatched on `scope["path"]` before Starlette's router and middleware, so
the hot path pays for neither; everything else (health, metrics, whatever routes the caller
mounts) is plain Starlette. The lifespan starts and stops the inbox's batch writer.
"""

import contextlib
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AbstractAsyncContextManager
from datetime import datetime

import structlog
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute
from starlette.types import Receive, Scope, Send

from receiver import metrics, ops
from receiver.config import ReceiverConfig
from receiver.intake import WebhookIntake
from store import sessions as sessions_store
from store.inbox import Inbox
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
) -> ReceiverApp:
    """The receiver: webhook intake, /healthz, /readyz, /metrics, plus the caller's `routes`.

    `lifespan`, if given, runs inside ours: after the inbox writer starts, before it stops
    (the place for the worker, so it stops before the writer does). `on_new` is called after
    each new delivery commits (the in-process worker's `wake`).
    """
    if not config.signing_keys:
        log.warning("receiver.no_signing_keys")  # every delivery will be refused with 401
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
        try:
            if lifespan is None:
                yield
            else:
                async with lifespan(app):
                    yield
        finally:
            metrics.INBOX_DEPTH.detach(inbox.depth)
            metrics.UNSAVED_OUTCOMES.detach(unsaved)
            await inbox.stop()

    app = ReceiverApp(
        debug=debug,
        routes=[*ops.routes(), *routes],
        exception_handlers={HTTPException: _http_error},
        lifespan=run,
    )
    app.intake = WebhookIntake(config, inbox, now, on_new)
    app.state.inbox = inbox
    app.state.config = config
    return app
