"""ReceiverError: everything the webhook edge refuses, with its HTTP status on the class.

`reason` is a short, fixed token (never request data): it is the JSON error body, the log
field and the metric label alike. `json_error` is the management endpoints' error body.
"""

import json
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse


def json_error(status: int, error: str, message: str) -> JSONResponse:
    """A fixed token for programs and a sentence for the person reading it."""
    return JSONResponse({"error": error, "message": message}, status_code=status)


async def json_body(request: Request, limit: int) -> Any:
    """A management endpoint's JSON body, or the error response to answer instead (413 over
    `limit`, 400 for bad JSON): `if isinstance(body, JSONResponse): return body`."""
    raw = await request.body()
    if len(raw) > limit:
        return json_error(413, "too_large", f"body over {limit} bytes")
    try:
        return json.loads(raw or b"null")
    except ValueError:
        return json_error(400, "invalid_request", "body is not valid JSON")


class ReceiverError(Exception):
    status_code = 500

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class BadRequest(ReceiverError):
    status_code = 400


class BadEvent(BadRequest):
    """Not a webhook envelope we know. Signed, the intake keeps it raw and answers 2xx
    (store/unrecognised.py): refusing it would count towards the endpoint being disabled."""


class BadSignature(ReceiverError):
    status_code = 401


class MethodNotAllowed(ReceiverError):
    status_code = 405


class BodyTooLarge(ReceiverError):
    status_code = 413


class HeaderTooLarge(ReceiverError):
    status_code = 431


class StoreDown(ReceiverError):
    """Nothing was committed; Anthropic retries a 503, so nothing is lost."""

    status_code = 503
