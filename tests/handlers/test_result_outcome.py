"""How a run ended, from the transcript and idlehook's own record of interrupting it."""

from datetime import UTC, datetime, timedelta
from typing import Any

from handlers.result import Interruption, run_outcome

T0 = datetime(2026, 12, 2, 12, 0, tzinfo=UTC)


def ev(kind: str, seconds: float, **fields: Any) -> dict[str, Any]:
    return {"type": kind, "processed_at": T0 + timedelta(seconds=seconds), **fields}


def turn(*middle: dict[str, Any], start: float = 0) -> list[dict[str, Any]]:
    return [
        ev("session.status_running", start),
        *middle,
        ev("session.status_idle", start + 50, stop_reason={"type": "end_turn"}),
    ]


def test_a_run_that_ended_by_itself_reports_its_stop_reason() -> None:
    assert run_outcome("idle", turn(ev("agent.message", 10))) == ("end_turn", None, None)
    refused = [
        ev("session.status_running", 0),
        ev("session.status_idle", 5, stop_reason={"type": "refusal"}),
    ]
    assert run_outcome("idle", refused)[0] == "refusal"
    assert run_outcome("terminated", turn()) == ("terminated", None, None)


def test_an_interrupt_is_told_apart_from_end_turn_and_attributed() -> None:
    events = turn(ev("user.interrupt", 20))
    assert run_outcome("idle", events) == ("interrupted", "user", None)
    ours = Interruption(at=T0 + timedelta(seconds=19), reason="max_running")
    assert run_outcome("idle", events, ours) == ("interrupted", "idlehook", "max_running")


def test_an_earlier_runs_interrupt_or_record_does_not_mark_the_latest() -> None:
    first = turn(ev("user.interrupt", 20))
    second = turn(ev("agent.message", 110), start=100)
    old_record = Interruption(at=T0 + timedelta(seconds=19), reason="past_deadline")
    assert run_outcome("idle", first + second, old_record) == ("end_turn", None, None)
    # idlehook meant to interrupt, but the interrupt never reached the API: not interrupted.
    failed = Interruption(at=T0 + timedelta(seconds=120), reason="max_running")
    assert run_outcome("idle", first + second, failed) == ("end_turn", None, None)
