"""The pure half of a follow-up: input, the deadline it sets, what an API failure means."""

from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any

import anthropic
import httpx2 as httpx  # the SDK drives its own fork of httpx
import pytest

from sessions.followup_rules import (
    FollowUpRequest,
    FollowUpUnavailable,
    InvalidFollowUp,
    SessionClosed,
    SessionNotFound,
    check_metadata_room,
    check_open,
    check_session_id,
    classify,
    is_ours,
    plan_deadline,
)
from sessions.metadata import DEADLINE_KEY

NOW = datetime(2026, 12, 3, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({}, "message: required"),
        ({"message": ""}, "message: String should have at least 1 character"),
        ({"message": "   "}, "message: must not be blank"),
        ({"message": 7}, "message: Input should be a valid string"),
        ({"message": "hi", "deadline": "soon"}, "deadline: bad duration 'soon'"),
        ({"message": "hi", "deadline": "0s"}, "deadline: must be longer than 0s"),
        ({"message": "hi", "idempotency_key": "k" * 201}, "idempotency_key: String should"),
        ({"message": "hi", "idempotency_key": ""}, "idempotency_key: String should"),
        ({"message": "hi", "surprise": 1}, "surprise: unknown field"),
    ],
)
def test_bad_requests_name_the_problem(body: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidFollowUp) as caught:
        FollowUpRequest.parse(body)
    assert message in str(caught.value)


@pytest.mark.parametrize("body", [None, [1], "hi"])
def test_a_request_must_be_an_object(body: Any) -> None:
    with pytest.raises(InvalidFollowUp, match="JSON object"):
        FollowUpRequest.parse(body)


def test_a_good_request() -> None:
    request = FollowUpRequest.parse({"message": "go on", "deadline": "1h30m"})
    assert request.allowance() == timedelta(minutes=90)
    assert request.idempotency_key is None
    assert FollowUpRequest.parse({"message": "go on"}).allowance() is None


@pytest.mark.parametrize("bad", ["", "../etc", "sesn 1", "x" * 201])
def test_session_ids_are_checked(bad: str) -> None:
    with pytest.raises(InvalidFollowUp, match="is not a session id"):
        check_session_id(bad)


def test_the_launch_allowance_is_renewed_from_now() -> None:
    created = NOW - timedelta(hours=5)
    plan = plan_deadline(
        NOW,
        explicit=None,
        remembered=None,
        old_deadline=created + timedelta(hours=2),
        created_at=created,
    )
    assert plan is not None
    assert (plan.deadline, plan.allowance) == (NOW + timedelta(hours=2), timedelta(hours=2))


def test_an_explicit_deadline_wins_then_the_remembered_one() -> None:
    created = NOW - timedelta(hours=5)
    old = created + timedelta(hours=2)
    explicit = plan_deadline(
        NOW,
        explicit=timedelta(minutes=30),
        remembered=timedelta(hours=3),
        old_deadline=old,
        created_at=created,
    )
    assert explicit is not None
    assert explicit.deadline == NOW + timedelta(minutes=30)
    # After a follow-up, deadline - created_at is the allowance plus the idle time since: the
    # remembered allowance is used instead, so it does not grow turn after turn.
    remembered = plan_deadline(
        NOW, explicit=None, remembered=timedelta(hours=3), old_deadline=old, created_at=created
    )
    assert remembered is not None
    assert remembered.deadline == NOW + timedelta(hours=3)


def test_no_deadline_stays_no_deadline() -> None:
    assert (
        plan_deadline(NOW, explicit=None, remembered=None, old_deadline=None, created_at=NOW)
        is None
    )
    given = plan_deadline(
        NOW, explicit=timedelta(hours=1), remembered=None, old_deadline=None, created_at=NOW
    )
    assert given is not None
    assert given.deadline == NOW + timedelta(hours=1)


def test_a_deadline_before_creation_has_no_allowance_to_renew() -> None:
    with pytest.raises(InvalidFollowUp, match="no run allowance to renew"):
        plan_deadline(NOW, explicit=None, remembered=None, old_deadline=NOW, created_at=NOW)


def test_a_new_deadline_needs_a_free_metadata_pair() -> None:
    plan = plan_deadline(
        NOW, explicit=timedelta(hours=1), remembered=None, old_deadline=None, created_at=NOW
    )
    full = {f"k{i}": "v" for i in range(16)}
    with pytest.raises(InvalidFollowUp, match="16 metadata pairs"):
        check_metadata_room(full, plan)
    check_metadata_room(full, None)  # nothing to add
    check_metadata_room({**{f"k{i}": "v" for i in range(15)}, DEADLINE_KEY: "x"}, plan)


def test_dead_sessions_take_no_messages() -> None:
    check_open("sesn_1", "idle", archived=False)
    check_open("sesn_1", "running", archived=False)  # events queue behind the run
    with pytest.raises(SessionClosed, match="is terminated"):
        check_open("sesn_1", "terminated", archived=False)
    with pytest.raises(SessionClosed, match="is archived"):
        check_open("sesn_1", "idle", archived=True)


def _status_error(status: int, message: str = "nope", **headers: str) -> anthropic.APIStatusError:
    request = httpx.Request("POST", "http://api.test/v1/sessions/sesn_1/events")
    response = httpx.Response(status, headers=headers, request=request)
    body = {"type": "error", "error": {"type": "x", "message": message}}
    return anthropic.APIStatusError(message, response=response, body=body)


def test_what_api_failures_mean() -> None:
    request = httpx.Request("POST", "http://api.test")
    timeout = classify(anthropic.APITimeoutError(request), "sesn_1", "k1")
    assert timeout is not None
    assert timeout.maybe_done
    assert isinstance(timeout.error, FollowUpUnavailable)
    assert "retry with idempotency key 'k1'" in str(timeout.error)

    server = classify(_status_error(502), "sesn_1", "k1")
    assert server is not None
    assert server.maybe_done

    limited = classify(
        anthropic.RateLimitError(
            "slow down",
            response=httpx.Response(429, headers={"retry-after": "3"}, request=request),
            body=None,
        ),
        "sesn_1",
        "k1",
    )
    assert limited is not None
    assert not limited.maybe_done
    assert isinstance(limited.error, FollowUpUnavailable)
    assert limited.error.retry_after_s == 3.0

    paused = classify(_status_error(400, "the session is paused on its budget"), "sesn_1", "k1")
    assert paused is not None
    assert not paused.maybe_done
    assert isinstance(paused.error, SessionClosed)
    assert "paused on its budget" in str(paused.error)

    gone = classify(_status_error(404), "sesn_1", "k1")
    assert gone is not None
    assert isinstance(gone.error, SessionNotFound)
    assert classify(ValueError("a bug"), "sesn_1", "k1") is None


def _message(text: str, processed_at: datetime | None, event_id: str = "sevt_1") -> Any:
    block = SimpleNamespace(type="text", text=text)
    return SimpleNamespace(
        id=event_id, type="user.message", content=[block], processed_at=processed_at
    )


def test_a_lost_send_is_recognised_by_text_time_and_id() -> None:
    since = NOW - timedelta(minutes=2)
    assert is_ours(_message("go on", NOW), "go on", since, set())
    assert is_ours(_message("go on", None), "go on", since, set())  # queued, not processed yet
    assert not is_ours(_message("go on!", NOW), "go on", since, set())
    assert not is_ours(_message("go on", since - timedelta(seconds=1)), "go on", since, set())
    # Another follow-up with the same words already accounts for that one.
    assert not is_ours(_message("go on", NOW, "sevt_9"), "go on", since, {"sevt_9"})
