"""Operator endpoints: /healthz (alive), /readyz (store reachable), /metrics (Prometheus)."""

import asyncio

import structlog
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from store.inbox import Inbox, StoreUnavailable

log = structlog.get_logger(__name__)

READY_TIMEOUT_SECONDS = 10.0


async def healthz(request: Request) -> Response:
    return JSONResponse({"status": "ok"})


async def readyz(request: Request) -> Response:
    inbox: Inbox = request.app.state.inbox
    try:
        await asyncio.wait_for(asyncio.to_thread(inbox.ping), READY_TIMEOUT_SECONDS)
    except (StoreUnavailable, TimeoutError) as exc:
        log.warning("readyz.store_unavailable", error=str(exc) or type(exc).__name__)
        return JSONResponse({"error": "store_unavailable"}, status_code=503)
    return JSONResponse({"status": "ready"})


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
