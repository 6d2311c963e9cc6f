"""The pure half of a follow-up: what a request may say, which deadline it sets, what an API
failure means for it. sessions/followups.py does the I/O around these.
"""

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import anthropic
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from handlers.durations import DurationError, parse_duration
from sessions.metadata import DEADLINE_KEY, MAX_PAIRS
from sessions.retry_after import retry_after_seconds

MAX_KEY_CHARS = 200  # the follow_ups table's column
_SESSION_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_\-]{0,199}")


class FollowUpError(Exception):
    """A follow-up that was not sent; the message is for the operator, as is."""


class InvalidFollowUp(FollowUpError):
    """Bad input, caught before any API call or store write."""


class SessionNotFound(FollowUpError):
    """No such session: the API has never heard of it, and neither have we."""


class SessionClosed(FollowUpError):
    """The session cannot take a message now: terminated, archived, deleted, or the API said
    no (a session paused on its budget refuses a `user.message` until the budget is raised)."""


class KeyConflict(FollowUpError):
    """The idempotency key is taken: by a different message, or by a send still in progress."""


class FollowUpUnavailable(FollowUpError):
    """The API (or the store) could not be asked now. Retrying with the same idempotency key is
    safe: a send whose outcome is unknown is looked for before it is sent again."""

    def __init__(self, message: str, *, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class FollowUpRequest(BaseModel):
    """What to send: the CLI flags, the `POST /sessions/{id}/messages` body and the Python
    API's arguments alike."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    message: str = Field(min_length=1)
    idempotency_key: str | None = Field(default=None, min_length=1, max_length=MAX_KEY_CHARS)
    deadline: str | None = Field(
        default=None, description='a run allowance from now: "2h", "90m"; else the session\'s own'
    )

    @field_validator("message")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must not be blank")
        return value

    @field_validator("deadline")
    @classmethod
    def _duration(cls, value: str | None) -> str | None:
        if value is not None and parse_allowance(value) is None:
            raise ValueError("must be longer than 0s")
        return value

    @classmethod
    def parse(cls, data: Any) -> "FollowUpRequest":
        """Validate untrusted input; every problem becomes one readable InvalidFollowUp."""
        if not isinstance(data, Mapping):
            raise InvalidFollowUp("a follow-up must be a JSON object")
        try:
            return cls.model_validate(dict(data))
        except ValidationError as exc:
            raise InvalidFollowUp(_explain(exc)) from None

    def allowance(self) -> timedelta | None:
        return None if self.deadline is None else parse_allowance(self.deadline)


def parse_allowance(text: str) -> timedelta | None:
    """A positive duration, or None for "0s"; raises ValueError naming the accepted forms."""
    try:
        value = parse_duration(text)
    except DurationError as exc:
        raise ValueError(str(exc)) from None
    return value if value > timedelta(0) else None


def _explain(exc: ValidationError) -> str:
    parts = []
    for error in exc.errors():
        where = ".".join(str(p) for p in error["loc"]) or "request"
        message = str(error["msg"]).removeprefix("Value error, ")
        if error["type"] == "extra_forbidden":
            message = "unknown field"
        elif error["type"] == "missing":
            message = "required"
        parts.append(f"{where}: {message}")
    return "; ".join(parts)


def check_session_id(session_id: str) -> None:
    if not _SESSION_ID.fullmatch(session_id):
        raise InvalidFollowUp(f"{session_id[:100]!r} is not a session id (sesn_...)")


def new_key(random_hex: str) -> str:
    """The key a follow-up without one gets: a retry by a person is a new message, as asked."""
    return f"idh_msg_{random_hex}"


# --- the deadline -------------------------------------------------------------------------------


@dataclass(frozen=True)
class DeadlinePlan:
    deadline: datetime
    allowance: timedelta


def plan_deadline(
    now: datetime,
    *,
    explicit: timedelta | None,
    remembered: timedelta | None,
    old_deadline: datetime | None,
    created_at: datetime | None,
) -> DeadlinePlan | None:
    """Where the next run's deadline goes: now plus the run's allowance, or nowhere.

    The allowance is `explicit` (`--deadline`), else the one the session's last follow-up used
    (`remembered`), else the launch's own: its deadline minus its creation. Only the first
    follow-up may derive it from the deadline: after one, the deadline minus the creation
    time is the allowance plus the session's whole idle life, and would grow with every turn.
    No deadline and no `--deadline`: the session has none, and gets none.
    """
    allowance = explicit if explicit is not None else remembered
    if allowance is None:
        if old_deadline is None or created_at is None:
            return None
        allowance = old_deadline - created_at
        if allowance <= timedelta(0):
            raise InvalidFollowUp(
                f"the session's deadline ({old_deadline.isoformat()}) is not after its creation "
                "time, so there is no run allowance to renew: give one with deadline / --deadline"
            )
    return DeadlinePlan(deadline=now + allowance, allowance=allowance)


def check_metadata_room(metadata: Mapping[str, str], plan: DeadlinePlan | None) -> None:
    """A deadline the API would refuse to store (all 16 pairs taken) is refused here first."""
    if plan is not None and DEADLINE_KEY not in metadata and len(metadata) >= MAX_PAIRS:
        raise InvalidFollowUp(
            f"the session already has {len(metadata)} metadata pairs (the API's limit is "
            f"{MAX_PAIRS}), so no deadline can be added: send without deadline / --deadline"
        )


# --- the session's state and the API's answers ----------------------------------------------------


def check_open(session_id: str, status: str, archived: bool) -> None:
    """Events can be sent to an idle or a running session (they queue); not to a dead one."""
    if archived:
        raise SessionClosed(f"session {session_id} is archived: it takes no more messages")
    if status == "terminated":
        raise SessionClosed(f"session {session_id} is terminated: it takes no more messages")


@dataclass(frozen=True)
class Failure:
    """What an exception from an API call means for the follow-up."""

    error: FollowUpError
    # The call may have been carried out anyway (timeout, dropped connection, 5xx).
    maybe_done: bool


def classify(exc: Exception, session_id: str, key: str) -> Failure | None:
    """An API error as a FollowUpError; None for anything else (a bug: let it raise)."""
    retry = f"retry with idempotency key {key!r}"
    if isinstance(exc, anthropic.RateLimitError):
        wait = retry_after_seconds(exc.response.headers)
        return Failure(
            FollowUpUnavailable(f"the API is rate limiting: {retry}", retry_after_s=wait),
            maybe_done=False,
        )
    if isinstance(exc, anthropic.APITimeoutError | anthropic.APIConnectionError):
        return Failure(
            FollowUpUnavailable(f"the API did not answer ({type(exc).__name__}): {retry}"),
            maybe_done=True,
        )
    if not isinstance(exc, anthropic.APIStatusError):
        return None
    status = exc.status_code
    if status >= 500 or status == 408:
        wait = retry_after_seconds(exc.response.headers)
        return Failure(
            FollowUpUnavailable(f"the API failed ({status}): {retry}", retry_after_s=wait),
            maybe_done=True,
        )
    if status == 404:
        return Failure(SessionNotFound(f"no session {session_id}"), maybe_done=False)
    # 400 (paused on its budget, a bad event), 409 (archived, terminated), any other 4xx: the
    # API read the request and said no, so nothing was done.
    return Failure(
        SessionClosed(f"the API refused the message to {session_id} ({status}): {_detail(exc)}"),
        maybe_done=False,
    )


def _detail(exc: anthropic.APIStatusError) -> str:
    body = exc.body
    if isinstance(body, dict):
        error = body.get("error")
        if isinstance(error, dict) and isinstance(error.get("message"), str):
            return str(error["message"])
    return exc.message


# --- finding a message an unanswered send delivered ------------------------------------------


def message_text(event: Any) -> str:
    """A `user.message` event's text blocks, joined: what `send` put in it."""
    return "".join(
        getattr(block, "text", "") or ""
        for block in getattr(event, "content", None) or []
        if getattr(block, "type", None) == "text"
    )


def is_ours(event: Any, message: str, since: datetime, taken: Iterable[str]) -> bool:
    """Is this listed `user.message` the one an earlier attempt sent?

    Same text, processed after that attempt began (or not processed yet: queued behind a run),
    and not already accounted for by another follow-up.
    """
    processed = getattr(event, "processed_at", None)
    if processed is not None and processed < since:
        return False
    return event.id not in set(taken) and message_text(event) == message
