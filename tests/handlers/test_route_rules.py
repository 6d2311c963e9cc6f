"""handlers.route_rules and handlers.retry are pure: no database, no network, no clock."""

from datetime import UTC, datetime, timedelta

import pytest

from handlers.config import RouteRule, WorkerSettings, default_routes
from handlers.retry import PermanentError, backoff_seconds, next_attempt
from handlers.route_rules import RouteFacts, needs_session, route

IDLE_END = RouteFacts(status="idle", stop_reason="end_turn", agent_id="agent_1")


@pytest.mark.parametrize("event_type", ["session.status_idled", "session.idled"])
def test_default_routes_harvest_a_finished_idle_from_either_family(event_type: str) -> None:
    decision = route(default_routes(), event_type, IDLE_END)
    assert decision.handlers == ("archive", "log")
    assert decision.rules == ("finished",)


@pytest.mark.parametrize(
    "stop_reason",
    [
        "end_turn",
        "retries_exhausted",
        "budget_reached",
        "refusal",
        "a_reason_not_invented_yet",
        None,
    ],
)
def test_default_routes_save_every_outcome(stop_reason: str | None) -> None:
    # Failed runs are reported and archived too, and a stop reason the SDK adds tomorrow is
    # archived rather than dropped: nothing idles unsaved by default.
    facts = RouteFacts(status="idle", stop_reason=stop_reason)
    assert route(default_routes(), "session.status_idled", facts).handlers == ("archive", "log")


def test_a_route_idle_for_is_the_shortest_of_the_matching_rules() -> None:
    rules = [
        RouteRule(name="a", handlers=["log"], idle_for="2h"),
        RouteRule(name="b", handlers=["archive"], idle_for="30m"),
        RouteRule(name="c", handlers=["archive"], stop_reasons=["refusal"], idle_for="1m"),
        RouteRule(name="d", handlers=["log"]),
    ]
    decision = route(rules, "session.status_idled", IDLE_END)
    assert decision.rules == ("a", "b", "d")
    assert decision.idle_for_seconds == 30 * 60
    assert route([RouteRule(handlers=["log"])], "x", None).idle_for_seconds is None


def test_idle_waiting_for_input_is_not_harvested() -> None:
    facts = RouteFacts(status="idle", stop_reason="requires_action")
    # Answered (custom tools, approvals), never archived as finished.
    assert route(default_routes(), "session.status_idled", facts).handlers == ("answer",)


def test_stale_idle_routes_nothing() -> None:
    facts = RouteFacts(status="running", stop_reason="end_turn")
    decision = route(default_routes(), "session.status_idled", facts)
    assert (decision.handlers, decision.reason) == ((), "stale_idle")


def test_terminated_routes_without_facts_and_unknown_types_route_to_nothing() -> None:
    assert route(default_routes(), "session.status_terminated", None).handlers == ("archive", "log")
    decision = route(default_routes(), "session.teleported", None)
    assert (decision.handlers, decision.reason) == ((), "no_rule")
    assert not needs_session(default_routes(), "session.teleported")


def test_every_matching_rule_contributes_deduplicated_in_order() -> None:
    rules = [
        RouteRule(name="a", event_types=["session.status_idled"], handlers=["archive", "log"]),
        RouteRule(name="b", metadata={"team": "x"}, handlers=["forward", "archive"]),
        RouteRule(name="c", agent_ids=["agent_2"], handlers=["never"]),
        RouteRule(name="d", deployment_ids=["depl_1"], statuses=["idle"], handlers=["delete"]),
    ]
    facts = RouteFacts(
        status="idle", agent_id="agent_1", deployment_id="depl_1", metadata={"team": "x"}
    )
    decision = route(rules, "session.status_idled", facts)
    assert decision.handlers == ("archive", "log", "forward", "delete")
    assert decision.rules == ("a", "b", "d")
    # A session that could not be fetched matches only rules that ask nothing of it.
    assert route(rules, "session.status_terminated", None).handlers == ()
    assert route(rules[:1], "session.status_idled", None).handlers == ("archive", "log")


def test_needs_session_only_when_a_rule_asks_or_to_check_an_idle() -> None:
    rules = [RouteRule(event_types=["session.status_terminated"], handlers=["log"])]
    assert not needs_session(rules, "session.status_terminated")
    assert not needs_session(rules, "session.status_idled")  # no rule wants it at all
    assert needs_session(default_routes(), "session.status_idled")
    assert needs_session([RouteRule(handlers=["log"])], "session.idled")
    assert needs_session([RouteRule(agent_ids=["a"], handlers=["log"])], "agent.created")


NOW = datetime(2026, 1, 1, tzinfo=UTC)
SETTINGS = WorkerSettings(max_attempts=4, backoff_base_seconds=2, backoff_max_seconds=10)


def test_backoff_grows_exponentially_with_jitter_and_a_cap() -> None:
    assert [backoff_seconds(n, base=2, maximum=10, jitter=0.0) for n in (1, 2, 3, 4, 5)] == [
        1,
        2,
        4,
        5,
        5,
    ]
    assert [
        backoff_seconds(n, base=2, maximum=10, jitter=0.999) for n in (1, 2, 3)
    ] == pytest.approx([2, 4, 8], abs=0.01)


def test_next_attempt_until_max_attempts_then_dead() -> None:
    err = RuntimeError("boom")
    assert next_attempt(1, err, NOW, SETTINGS, jitter=lambda: 0.5) == NOW + timedelta(seconds=1.5)
    assert next_attempt(3, err, NOW, SETTINGS, jitter=lambda: 0.0) == NOW + timedelta(seconds=4)
    assert next_attempt(4, err, NOW, SETTINGS) is None
    assert next_attempt(1, PermanentError("no"), NOW, SETTINGS) is None
