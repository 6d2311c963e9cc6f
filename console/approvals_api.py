"""`GET /approvals` and `POST /approvals/{id}`: a person decides a tool use held for confirmation.

Bearer token or the web page's cookie (console/auth.py). The body is
`{"decision": "allow"|"deny", "message": "..."}`; the message is what the agent is told on deny.
200: decided and the confirmation sent; 202: decided, the send failed and will be retried by the
sweep; 409: someone decided first (the body says how); 404: no such approval.
"""

from collections.abc import Callable
from datetime import datetime
from typing import Any

import structlog
from anthropic import AsyncAnthropic
from pydantic import SecretStr
from sqlalchemy.engine import Engine
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from console.auth import authorised
from console.errors import json_body, json_error
from handlers.tools.confirm import NotFound, settle
from store import approvals
from store.approvals import ApprovalView, Decision, PendingApproval
from store.models import utcnow

log = structlog.get_logger(__name__)

MAX_BODY_BYTES = 16 * 1024
MAX_MESSAGE_CHARS = 4000


def pending_json(p: PendingApproval) -> dict[str, Any]:
    return {
        "id": p.id,
        "session_id": p.session_id,
        "tool_use_id": p.tool_use_id,
        "tool_name": p.tool_name,
        "input": p.input,
        "requested_at": p.requested_at.isoformat(),
        "expires_at": p.expires_at.isoformat() if p.expires_at else None,
    }


def approval_json(a: ApprovalView) -> dict[str, Any]:
    return {
        **pending_json(a.pending()),
        "state": a.state,
        "decision": a.decision,
        "message": a.message,
        "decided_by": a.decided_by,
        "decided_at": a.decided_at.isoformat() if a.decided_at else None,
        "sent_at": a.sent_at.isoformat() if a.sent_at else None,
    }


def parse_decision(body: Any) -> tuple[Decision, str | None]:
    """The request body as (decision, message); ValueError names what is wrong."""
    if not isinstance(body, dict):
        raise ValueError("body must be a JSON object")
    raw = body.get("decision")
    if raw not in ("allow", "deny"):
        raise ValueError('decision: must be "allow" or "deny"')
    message = body.get("message")
    if message is not None and not isinstance(message, str):
        raise ValueError("message: must be a string")
    if message is not None and len(message) > MAX_MESSAGE_CHARS:
        raise ValueError(f"message: at most {MAX_MESSAGE_CHARS} characters")
    return Decision(raw), (message or None)


def approvals_routes(
    engine: Engine,
    client: AsyncAnthropic,
    api_token: SecretStr | None,
    *,
    now: Callable[[], datetime] = utcnow,
) -> list[Route]:
    async def listing(request: Request) -> Response:
        if not authorised(request, api_token):
            return json_error(401, "unauthorized", "send Authorization: Bearer <api_token>")
        session_id = request.query_params.get("session_id") or None
        rows = await run_in_threadpool(approvals.list_pending, engine, session_id)
        return JSONResponse({"data": [pending_json(p) for p in rows]})

    async def decide(request: Request) -> Response:
        if not authorised(request, api_token):
            return json_error(401, "unauthorized", "send Authorization: Bearer <api_token>")
        try:
            approval_id = int(request.path_params["approval_id"])
        except ValueError:
            return json_error(404, "not_found", "no such approval")
        body = await json_body(request, MAX_BODY_BYTES)
        if isinstance(body, JSONResponse):
            return body
        try:
            decision, message = parse_decision(body)
        except ValueError as exc:
            return json_error(400, "invalid_request", str(exc))
        try:
            settled = await settle(
                engine, client, approval_id, decision, message=message, by="http", now=now()
            )
        except NotFound:
            return json_error(404, "not_found", f"no approval {approval_id}")
        view = approval_json(settled.approval)
        log.info(
            "api.approval",
            approval_id=approval_id,
            decision=decision.value,
            decided=settled.decided,
            sent=settled.sent,
        )
        if not settled.decided:
            return JSONResponse(
                {"error": "already_decided", "message": "someone decided first", **view},
                status_code=409,
            )
        if settled.error is not None:
            return JSONResponse({**view, "sent": False, "retrying": True}, status_code=202)
        return JSONResponse({**view, "sent": settled.sent})

    return [
        Route("/approvals", listing, methods=["GET"]),
        Route("/approvals/{approval_id}", decide, methods=["POST"]),
    ]
