"""Operator endpoints: /healthz (alive), /readyz (deliveries can be taken), /metrics (Prometheus).

Ready means a verified delivery would be acknowledged: the store takes writes, or, while it does
not, the local journal does (store/journal.py). /readyz then stays 200 and says so (`"store":
"unavailable"` with the journal's depth), so a load balancer keeps sending Anthropic's retries
to a receiver that will acknowledge them.
"""

import asyncio
import time
from typing import Any

import structlog
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from store.inbox import Inbox, StoreUnavailable
from store.journal import Journal

log = structlog.get_logger(__name__)

READY_TIMEOUT_SECONDS = 10.0


async def healthz(request: Request) -> Response:
    return JSONResponse({"status": "ok"})


async def readyz(request: Request) -> Response:
    inbox: Inbox = request.app.state.inbox
    journal: Journal | None = getattr(request.app.state, "journal", None)
    try:
        await asyncio.wait_for(asyncio.to_thread(inbox.ping), READY_TIMEOUT_SECONDS)
        pinged = True
    except (StoreUnavailable, TimeoutError) as exc:
        log.warning("readyz.store_unavailable", error=str(exc) or type(exc).__name__)
        pinged = False
    if journal is None:
        if not pinged:
            return JSONResponse({"error": "store_unavailable"}, status_code=503)
        return JSONResponse({"status": "ready"})
    # A read can work while writes fail (a full disk): the last write says (the intake's, or
    # the drainer's once the store takes the journal's deliveries again).
    store_up = pinged and not request.app.intake.store_failing
    unwritable = journal.unwritable()
    body: dict[str, Any] = {
        "status": "ready" if store_up or unwritable is None else "unavailable",
        "store": "ok" if store_up else "unavailable",
        "journal": _journal(journal, unwritable),
    }
    if body["status"] != "ready":
        body["error"] = "store_unavailable"
        return JSONResponse(body, status_code=503)
    return JSONResponse(body)


def _journal(journal: Journal, unwritable: str | None) -> dict[str, Any]:
    stats = journal.stats()
    oldest = stats.oldest_seconds(time.time())
    return {
        "depth": stats.depth,
        "oldest_seconds": None if oldest is None else round(oldest, 3),
        "bytes": stats.bytes,
        "writable": unwritable is None,
        **({"reason": unwritable} if unwritable else {}),
    }


async def metrics(request: Request) -> Response:
    # The depth collector queries the store: keep that off the event loop.
    payload = await asyncio.to_thread(generate_latest, REGISTRY)
    return Response(payload, media_type=CONTENT_TYPE_LATEST)


def routes() -> list[Route]:
    return [
        Route("/healthz", healthz, methods=["GET"]),
        Route("/readyz", readyz, methods=["GET"]),
        Route("/metrics", metrics, methods=["GET"]),
    ]
