"""`POST /sessions/{id}/messages`: a follow-up to a session that already exists.

Bearer token or the web page's cookie (console/auth.py), like `POST /sessions`. The body is
`{"message": "...", "idempotency_key": "...", "deadline": "2h"}` (only `message` is required).
201: sent now; 200: this key was sent before (or an earlier attempt's message was found), and
nothing new was sent. 400 bad input; 404 no such session; 409 the session cannot take a message
now (terminated, archived, deleted, paused on its budget) or the key is taken; 503 the API or
the store could not be asked: retrying with the same key is safe.
"""

import sqlalchemy.exc
import structlog
from pydantic import SecretStr
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from console.auth import authorised
from console.errors import json_body, json_error
from sessions.followups import (
    FollowUpError,
    FollowUpRequest,
    FollowUpUnavailable,
    InvalidFollowUp,
    KeyConflict,
    SessionClosed,
    SessionNotFound,
)
from sessions.launcher import Launcher

log = structlog.get_logger(__name__)

MAX_BODY_BYTES = 256 * 1024

# Most specific first: each error class is one status and one fixed token.
_ANSWERS: list[tuple[type[FollowUpError], int, str]] = [
    (InvalidFollowUp, 400, "invalid_request"),
    (SessionNotFound, 404, "not_found"),
    (SessionClosed, 409, "session_closed"),
    (KeyConflict, 409, "idempotency_conflict"),
    (FollowUpUnavailable, 503, "unavailable"),
]


def error_response(exc: FollowUpError) -> JSONResponse:
    for cls, status, token in _ANSWERS:
        if isinstance(exc, cls):
            response = json_error(status, token, str(exc))
            if isinstance(exc, FollowUpUnavailable) and exc.retry_after_s is not None:
                response.headers["retry-after"] = str(max(1, round(exc.retry_after_s)))
            return response
    return json_error(400, "follow_up_refused", str(exc))


def followup_routes(launcher: Launcher, api_token: SecretStr | None) -> list[Route]:
    """Routes for the receiver app: `Starlette(routes=[..., *followup_routes(...)])`."""

    async def send(request: Request) -> Response:
        if not authorised(request, api_token):
            return json_error(401, "unauthorized", "send Authorization: Bearer <api_token>")
        body = await json_body(request, MAX_BODY_BYTES)
        if isinstance(body, JSONResponse):
            return body
        session_id = request.path_params["session_id"]
        try:
            followup = FollowUpRequest.parse(body)
            result = await launcher.send(
                session_id,
                followup.message,
                idempotency_key=followup.idempotency_key,
                deadline=followup.deadline,
            )
        except FollowUpError as exc:
            return error_response(exc)
        except sqlalchemy.exc.SQLAlchemyError:
            # Before anything was claimed (reading the follow-up row): nothing was sent.
            return json_error(503, "store_unavailable", "the store is unavailable: retry")
        log.info("api.follow_up", session_id=session_id, new=result.new, event_id=result.event_id)
        return JSONResponse(result.to_json(), status_code=201 if result.new else 200)

    return [Route("/sessions/{session_id}/messages", send, methods=["POST"])]
