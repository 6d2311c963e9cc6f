"""`POST /sessions/{id}/budget`: a person raises a session's spend ceiling.

Bearer token or the web page's cookie plus its CSRF header (console/auth.py). The body is
`{"usd": 12.5}`. 200 answers the new budget; 400 bad input; 404 no such session; 409 the
API's rules refuse the raise (no update call was made, or the API itself said no); 503 the
API could not be asked. The API resumes a session paused on its budget by itself.
"""

import structlog
from pydantic import SecretStr
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from console.auth import authorised
from console.errors import json_body, json_error
from sessions.budget import BudgetNotFound, BudgetRefused, BudgetUnavailable, InvalidBudget
from sessions.launcher import Launcher

log = structlog.get_logger(__name__)

MAX_BODY_BYTES = 4096


def parse_usd(body: object) -> object:
    """The `usd` field of the body; ValueError names what is wrong. Its value is checked by
    `usd_to_cents`, the one place that knows what a sane budget is."""
    if not isinstance(body, dict):
        raise ValueError('body must be a JSON object: {"usd": 12.5}')
    unknown = sorted(set(body) - {"usd"})
    if unknown:
        raise ValueError(f"{unknown[0]}: unknown field")
    if "usd" not in body:
        raise ValueError('usd: required, the new cap in US dollars, e.g. {"usd": 12.5}')
    return body["usd"]


def budget_routes(launcher: Launcher, api_token: SecretStr | None) -> list[Route]:
    async def raise_cap(request: Request) -> Response:
        if not authorised(request, api_token):
            return json_error(401, "unauthorized", "send Authorization: Bearer <api_token>")
        session_id = str(request.path_params["session_id"])
        body = await json_body(request, MAX_BODY_BYTES)
        if isinstance(body, JSONResponse):
            return body
        try:
            usd = parse_usd(body)
        except ValueError as exc:
            return json_error(400, "invalid_request", str(exc))
        try:
            raised = await launcher.raise_budget(session_id, usd)
        except InvalidBudget as exc:
            return json_error(400, "invalid_request", f"usd: {exc}")
        except BudgetNotFound as exc:
            return json_error(404, "not_found", str(exc))
        except BudgetRefused as exc:
            log.info("api.budget_refused", session_id=session_id, reason=exc.reason)
            return json_error(409, exc.reason, str(exc))
        except BudgetUnavailable as exc:
            return json_error(503, "api_unavailable", str(exc))
        log.info("api.budget_raised", session_id=session_id, cap_usd=raised.cap_usd)
        return JSONResponse(raised.to_json())

    return [Route("/sessions/{session_id}/budget", raise_cap, methods=["POST"])]
