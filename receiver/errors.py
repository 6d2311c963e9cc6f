"""ReceiverError: everything the webhook edge refuses, with its HTTP status on the class.

`reason` is a short, fixed token (never request data): it is the JSON error body, the log
field and the metric label alike.
"""


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
