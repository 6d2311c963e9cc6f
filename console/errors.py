"""The management endpoints' JSON error body, and their bounded JSON request body."""

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
