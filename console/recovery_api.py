"""Recovery from the page or a script: replay or discard a dead letter, re-route what matched
no rule. The same store operations as `idlehook replay|discard|reroute` (idlehook/cli/recovery.py).

    POST /dead-letters/{id}/replay     re-route its delivery through the current routes
    POST /dead-letters/{id}/discard    {"reason": "..."}: off the list for good, reason kept
    POST /reroute/unmatched            {"dry_run": false}: re-route deliveries no rule matched,
                                       of the types some current route wants

Bearer token, or the page's cookie plus its CSRF header (console/auth.py). 200 answers what
was done; 400 bad input; 401; 404 no such dead letter (or no longer dead); 409 not replayed:
no current route names a handler for its event type, or a run of its delivery is unfinished.
"""

import asyncio
from collections.abc import Sequence
from dataclasses import asdict
from datetime import datetime
from typing import Any

import structlog
from pydantic import SecretStr
from sqlalchemy.engine import Engine
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from console.auth import authorised
from console.errors import json_body, json_error
from handlers.config import RouteRule
from handlers.routing import handlers_for_type, routed_types
from store.models import utcnow
from store.runs import Reroute, RunStore

log = structlog.get_logger(__name__)

MAX_BODY_BYTES = 4096
MAX_REASON_CHARS = 2000
# Who acted, as kept on the runs: the token names no person.
ACTOR = "http"


def _unauthorised() -> JSONResponse:
    return json_error(401, "unauthorized", "send Authorization: Bearer <api_token>")


def _run_id(request: Request) -> int | None:
    try:
        return int(request.path_params["run_id"])
    except ValueError:
        return None


def _fields(body: object, allowed: set[str]) -> dict[str, Any]:
    """The JSON object sent (none: empty); ValueError names what is wrong."""
    if body is None:
        return {}
    if not isinstance(body, dict):
        raise ValueError("body must be a JSON object")
    unknown = sorted(set(body) - allowed)
    if unknown:
        raise ValueError(f"{unknown[0]}: unknown field")
    return body


def _jsonable(reroute: Reroute) -> dict[str, Any]:
    return {k: v.isoformat() if isinstance(v, datetime) else v for k, v in asdict(reroute).items()}


def unmatched_count(engine: Engine, routes: Sequence[RouteRule], cap: int = 1000) -> int:
    """Deliveries no rule matched that some current route wants (up to `cap`): the page offers
    Reroute unmatched while there are any."""
    found = RunStore(engine).deliveries_to_reroute(
        unmatched=True, event_types=routed_types(routes), limit=cap
    )
    return len(found)


def recovery_routes(
    engine: Engine, api_token: SecretStr | None, routes: Sequence[RouteRule]
) -> list[Route]:
    store = RunStore(engine)

    async def replay(request: Request) -> Response:
        if not authorised(request, api_token):
            return _unauthorised()
        run_id = _run_id(request)
        dead = [] if run_id is None else await asyncio.to_thread(store.dead_runs, [run_id])
        if not dead:
            return json_error(404, "not_found", f"no dead letter {request.path_params['run_id']}")
        [letter] = dead
        names = handlers_for_type(routes, letter.event_type)
        if not names:
            return json_error(
                409,
                "no_route",
                f"no route in the current config names a handler for {letter.event_type}: "
                "it stays a dead letter (add a route, or discard it)",
            )
        [done] = await asyncio.to_thread(
            store.reroute, [letter.delivery_id], utcnow(), by=ACTOR, note="replayed"
        )
        if done.outcome != "rerouted" or letter.id not in done.superseded:
            return json_error(409, "busy", "a run of its delivery is still to finish; try later")
        log.info("api.replayed", run_id=letter.id, route_run_id=done.route_run_id)
        return JSONResponse(
            {
                "replayed": list(done.superseded),
                "route_run_id": done.route_run_id,
                "routes_now": names,
            }
        )

    async def discard(request: Request) -> Response:
        if not authorised(request, api_token):
            return _unauthorised()
        body = await json_body(request, MAX_BODY_BYTES)
        if isinstance(body, JSONResponse):
            return body
        try:
            reason = _fields(body, {"reason"}).get("reason")
            if not isinstance(reason, str) or not reason.strip():
                raise ValueError('reason: required, why it is given up on: {"reason": "..."}')
            if len(reason) > MAX_REASON_CHARS:
                raise ValueError(f"reason: at most {MAX_REASON_CHARS} characters")
        except ValueError as exc:
            return json_error(400, "invalid_request", str(exc))
        run_id = _run_id(request)
        dead = [] if run_id is None else await asyncio.to_thread(store.dead_runs, [run_id])
        done = await asyncio.to_thread(store.discard, dead, utcnow(), by=ACTOR, reason=reason)
        if not done:
            return json_error(404, "not_found", f"no dead letter {request.path_params['run_id']}")
        log.info("api.discarded", run_id=done[0].id)
        return JSONResponse({"discarded": [d.id for d in done], "reason": reason.strip()})

    async def reroute_unmatched(request: Request) -> Response:
        if not authorised(request, api_token):
            return _unauthorised()
        body = await json_body(request, MAX_BODY_BYTES)
        if isinstance(body, JSONResponse):
            return body
        try:
            dry_run = _fields(body, {"dry_run"}).get("dry_run", False)
            if not isinstance(dry_run, bool):
                raise ValueError("dry_run: true or false")
        except ValueError as exc:
            return json_error(400, "invalid_request", str(exc))

        def work() -> list[Reroute]:
            # Only types some current route wants: the rest would match nothing again.
            ids = store.deliveries_to_reroute(unmatched=True, event_types=routed_types(routes))
            return store.reroute(ids, utcnow(), by=ACTOR, dry_run=dry_run)

        done = await asyncio.to_thread(work)
        counted = sum(r.outcome in ("rerouted", "would_reroute") for r in done)
        log.info("api.rerouted_unmatched", deliveries=counted, dry_run=dry_run)
        return JSONResponse(
            {
                "dry_run": dry_run,
                "rerouted" if not dry_run else "would_reroute": counted,
                "deliveries": [_jsonable(r) for r in done],
            }
        )

    return [
        Route("/dead-letters/{run_id}/replay", replay, methods=["POST"]),
        Route("/dead-letters/{run_id}/discard", discard, methods=["POST"]),
        Route("/reroute/unmatched", reroute_unmatched, methods=["POST"]),
    ]
