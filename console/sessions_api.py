"""`POST /sessions` and `GET /sessions`: launching for event-driven integrations.

Bearer-token protected (`Settings.api_token`, checked by console/auth.py, which also admits the
web page's cookie). A launch answers 201 with the new session id once the create call succeeded,
or 202 when queued (`"queue": true`, or the create is still waiting for its turn). Bad input is
a 400 naming the problem. Files must be `file_...` ids here: a path would read the server's own
disk.
"""

import asyncio
from collections.abc import Callable
from datetime import datetime

import structlog
from pydantic import SecretStr
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from console.auth import authorised
from console.errors import json_body, json_error
from sessions.launcher import (
    InvalidLaunch,
    Launcher,
    LaunchError,
    LaunchRequest,
)
from sessions.tracked_view import describe_tracked
from store.models import utcnow

log = structlog.get_logger(__name__)

MAX_BODY_BYTES = 256 * 1024


def sessions_routes(
    launcher: Launcher,
    api_token: SecretStr | None,
    *,
    wait_seconds: float = 30.0,
    now: Callable[[], datetime] = utcnow,
) -> list[Route]:
    """Routes for the receiver app: `Starlette(routes=[..., *sessions_routes(...)])`."""

    async def launch(request: Request) -> Response:
        if not authorised(request, api_token):
            return json_error(401, "unauthorized", "send Authorization: Bearer <api_token>")
        body = await json_body(request, MAX_BODY_BYTES)
        if isinstance(body, JSONResponse):
            return body
        if not isinstance(body, dict):
            return json_error(400, "invalid_request", "body must be a JSON object")
        queue = body.pop("queue", False)
        if not isinstance(queue, bool):
            return json_error(400, "invalid_request", "queue: must be true or false")
        try:
            launch_request = LaunchRequest.parse(body)
            if queue:
                result = await launcher.enqueue(launch_request)
            else:
                result = await launcher.start(launch_request, wait_seconds=wait_seconds)
        except InvalidLaunch as exc:
            return json_error(400, "invalid_request", str(exc))
        except LaunchError as exc:
            return json_error(400, "launch_rejected", str(exc))
        status = 201 if result.state == "created" else 202
        log.info("api.launch", launch_id=result.launch_id, state=result.state, new=result.new)
        return JSONResponse(result.to_json(), status_code=status)

    async def listing(request: Request) -> Response:
        if not authorised(request, api_token):
            return json_error(401, "unauthorized", "send Authorization: Bearer <api_token>")
        try:
            limit = int(request.query_params.get("limit", "100"))
        except ValueError:
            return json_error(400, "invalid_request", "limit: expected an integer")
        if not 1 <= limit <= 1000:
            return json_error(400, "invalid_request", "limit: 1 to 1000")
        rows = await asyncio.to_thread(launcher.store.tracked, limit)
        moment: datetime = now()
        return JSONResponse({"data": [describe_tracked(r, moment) for r in rows]})

    return [
        Route("/sessions", launch, methods=["POST"]),
        Route("/sessions", listing, methods=["GET"]),
    ]
