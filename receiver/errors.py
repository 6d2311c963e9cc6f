"""ReceiverError: everything the webhook edge refuses, with its HTTP status on the class.

`reason` is a short, fixed token (never request data): it is the JSON error body, the log
field and the metric label alike. `json_error` is the management endpoints' error body.
"""

from starlette.responses import JSONResponse


def json_error(status: int, error: str, message: str) -> JSONResponse:
    """A fixed token for programs and a sentence for the person reading it."""
    return JSONResponse({"error": error, "message": message}, status_code=status)


class ReceiverError(Exception):
    status_code = 500

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class BadRequest(ReceiverError):
    status_code = 400


class BadEvent(BadRequest):
    """Signed correctly, but not a webhook event we can record."""


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
