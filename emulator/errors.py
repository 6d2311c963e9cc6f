"""The API's error family: each class knows its status and `error.type`; one handler renders
the envelope `{"type":"error","error":{...},"request_id":...}` the SDK parses."""

from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from emulator.ids import request_id


class APIError(Exception):
    status_code = 500
    error_type = "api_error"

    def __init__(
        self,
        message: str,
        *,
        error_code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.error_code = error_code
        self.headers = headers or {}


class BadRequest(APIError):
    status_code = 400
    error_type = "invalid_request_error"


class AuthenticationFailed(APIError):
    status_code = 401
    error_type = "authentication_error"


class NotFound(APIError):
    status_code = 404
    error_type = "not_found_error"


class MethodNotAllowed(APIError):
    status_code = 405
    error_type = "invalid_request_error"


class Conflict(APIError):
    # The real API reports conflicts (archived session, version mismatch) as invalid requests.
    status_code = 409
    error_type = "invalid_request_error"


class RateLimited(APIError):
    status_code = 429
    error_type = "rate_limit_error"


class InternalError(APIError):
    status_code = 500
    error_type = "api_error"


class Overloaded(APIError):
    status_code = 529
    error_type = "overloaded_error"


def envelope(exc: APIError, req_id: str) -> dict[str, Any]:
    error: dict[str, Any] = {"type": exc.error_type, "message": exc.message}
    if exc.error_code is not None:
        error["details"] = {"error_code": exc.error_code}
    return {"type": "error", "error": error, "request_id": req_id}


def error_response(exc: APIError, req_id: str | None = None) -> Response:
    rid = req_id or request_id()
    headers = {"request-id": rid, **exc.headers}
    return JSONResponse(envelope(exc, rid), status_code=exc.status_code, headers=headers)


async def handle_api_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, APIError)
    return error_response(exc, getattr(request.state, "request_id", None))


async def handle_not_found(request: Request, exc: Exception) -> Response:
    return error_response(NotFound(f"Not found: {request.method} {request.url.path}"))


async def handle_method_not_allowed(request: Request, exc: Exception) -> Response:
    return error_response(MethodNotAllowed(f"Method not allowed: {request.method}"))
