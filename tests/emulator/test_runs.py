"""Scripted runs: every outcome, the requires_action round trips, interrupts, and how the
script is chosen."""

from typing import Any

import anthropic
import pytest

from tests.emulator.conftest import Served, idle_events, start_session, user_message, world
from tests.support.servers import wait_for


def of_type(client: anthropic.Anthropic, session_id: str, kind: str) -> list[Any]:
    return list(client.beta.sessions.events.list(session_id, types=[kind]))  # type: ignore[list-item]


def settled(client: anthropic.Anthropic, session_id: str, count: int = 1) -> list[Any]:
    found: list[Any] = wait_for(
        lambda: len(idle_events(client, session_id)) >= count and idle_events(client, session_id)
    )
    return found


def types(client: anthropic.Anthropic, session_id: str) -> list[str]:
    return [e.type for e in client.beta.sessions.events.list(session_id)]


def test_requires_action_allow_runs_the_tool(client: anthropic.Anthropic) -> None:
    w = world(client)
    session = start_session(client, w, script="requires_action")
    idle = settled(client, session.id)[-1]
    assert idle.stop_reason.type == "requires_action"
    (tool_use_id,) = idle.stop_reason.event_ids
    tool_use = of_type(client, session.id, "agent.tool_use")[0]
    assert tool_use.id == tool_use_id
    assert tool_use.evaluated_permission == "ask"
    client.beta.sessions.events.send(
        session.id,
        events=[{"type": "user.tool_confirmation", "tool_use_id": tool_use_id, "result": "allow"}],
    )
    final = settled(client, session.id, 2)[-1]
    assert final.stop_reason.type == "end_turn"
    results = of_type(client, session.id, "agent.tool_result")
    assert results[0].tool_use_id == tool_use_id
    assert not results[0].is_error


def test_requires_action_deny_shows_the_message(client: anthropic.Anthropic) -> None:
    w = world(client)
    session = start_session(client, w, script="requires_action")
    (tool_use_id,) = settled(client, session.id)[-1].stop_reason.event_ids
    client.beta.sessions.events.send(
        session.id,
        events=[
            {
                "type": "user.tool_confirmation",
                "tool_use_id": tool_use_id,
                "result": "deny",
                "deny_message": "not on prod",
            }
        ],
    )
    assert settled(client, session.id, 2)[-1].stop_reason.type == "end_turn"
    messages = of_type(client, session.id, "agent.message")
    assert any("not on prod" in m.content[0].text for m in messages)


def test_partial_answers_reidle_with_the_rest(client: anthropic.Anthropic) -> None:
    w = world(client)
    session = start_session(client, w, script="mixed_action")
    ids = settled(client, session.id)[-1].stop_reason.event_ids
    assert len(ids) == 2
    custom = of_type(client, session.id, "agent.custom_tool_use")[0]
    client.beta.sessions.events.send(
        session.id,
        events=[
            {
                "type": "user.custom_tool_result",
                "custom_tool_use_id": custom.id,
                "content": [{"type": "text", "text": "42"}],
            }
        ],
    )
    again = settled(client, session.id, 2)[-1]
    assert again.stop_reason.type == "requires_action"
    assert again.stop_reason.event_ids == [i for i in ids if i != custom.id]
    client.beta.sessions.events.send(
        session.id,
        events=[
            {
                "type": "user.tool_confirmation",
                "tool_use_id": again.stop_reason.event_ids[0],
                "result": "allow",
            }
        ],
    )
    assert settled(client, session.id, 3)[-1].stop_reason.type == "end_turn"


def test_custom_tools_three_round_trips(client: anthropic.Anthropic) -> None:
    w = world(client)
    session = start_session(client, w, script="custom_tools:3")
    for round_trip in range(1, 4):
        idle = settled(client, session.id, round_trip)[-1]
        assert idle.stop_reason.type == "requires_action"
        (use_id,) = idle.stop_reason.event_ids
        client.beta.sessions.events.send(
            session.id, events=[{"type": "user.custom_tool_result", "custom_tool_use_id": use_id}]
        )
    assert settled(client, session.id, 4)[-1].stop_reason.type == "end_turn"
    assert types(client, session.id).count("agent.custom_tool_use") == 3


def test_answer_for_unknown_tool_is_400(client: anthropic.Anthropic) -> None:
    w = world(client)
    session = client.beta.sessions.create(agent=w.agent_id, environment_id=w.environment_id)
    with pytest.raises(anthropic.BadRequestError):
        client.beta.sessions.events.send(
            session.id,
            events=[{"type": "user.tool_confirmation", "tool_use_id": "sevt_x", "result": "allow"}],
        )


def test_retries_exhausted(client: anthropic.Anthropic) -> None:
    w = world(client)
    session = start_session(client, w, script="retries_exhausted")
    assert settled(client, session.id)[-1].stop_reason.type == "retries_exhausted"
    (error,) = of_type(client, session.id, "session.error")
    assert error.error.retry_status.type == "exhausted"
    assert client.beta.sessions.retrieve(session.id).status == "idle"


def test_terminate(client: anthropic.Anthropic) -> None:
    w = world(client)
    session = start_session(client, w, script="terminate")
    wait_for(lambda: client.beta.sessions.retrieve(session.id).status == "terminated")
    (error,) = of_type(client, session.id, "session.error")
    assert error.error.retry_status.type == "terminal"
    assert types(client, session.id)[-1] == "session.status_terminated"
    with pytest.raises(anthropic.APIStatusError):
        client.beta.sessions.events.send(session.id, events=[user_message()])


def test_budget_reached_pauses_until_raised(client: anthropic.Anthropic) -> None:
    w = world(client)
    budget: Any = {"type": "limit", "max_list_cost": {"amount": "100", "currency": "USD"}}
    session = start_session(client, w, script="budget_reached", budget=budget)
    assert settled(client, session.id)[-1].stop_reason.type == "budget_reached"
    assert "session.usage" in types(client, session.id)
    with pytest.raises(anthropic.BadRequestError):
        client.beta.sessions.events.send(session.id, events=[user_message()])
    raised: Any = {"type": "limit", "max_list_cost": {"amount": "500", "currency": "USD"}}
    client.beta.sessions.update(session.id, budget=raised)
    assert settled(client, session.id, 2)[-1].stop_reason.type == "end_turn"
    assert "session.updated" in types(client, session.id)


@pytest.mark.parametrize("how", ["metadata", "token"])
def test_refusal(client: anthropic.Anthropic, how: str) -> None:
    w = world(client)
    if how == "metadata":
        session = start_session(client, w, script="refusal")
    else:
        session = start_session(client, w, text="do the thing #script:refusal")
    idle = settled(client, session.id)[-1]  # parsed by the SDK under strict validation
    assert idle.stop_reason.type == "refusal"
    assert idle.stop_details is not None
    assert idle.stop_details.type == "refusal"
    assert idle.stop_details.category == "general_harms"
    assert idle.stop_details.explanation
    assert len(of_type(client, session.id, "agent.message")) == 1  # it said something first
    assert client.beta.sessions.retrieve(session.id).status == "idle"
    if how == "token":  # (metadata would pick the script for every turn)
        # The next turn is the default script again, and its idle carries no stop_details.
        client.beta.sessions.events.send(session.id, events=[user_message("again")])
        final = settled(client, session.id, 2)[-1]
        assert final.stop_reason.type == "end_turn"
        assert final.stop_details is None


def test_interrupt_stops_a_run(start) -> None:
    served: Served = start(speed=5)  # a 60 s turn lasts 12 s: plenty of room to interrupt
    client = served.client()
    w = world(client)
    session = start_session(client, w, script="long:5", metadata={"emulator_run_seconds": "60"})
    client.beta.sessions.events.send(session.id, events=[{"type": "user.interrupt"}])
    idle = settled(client, session.id)[-1]
    assert idle.stop_reason.type == "end_turn"
    assert client.beta.sessions.retrieve(session.id).status == "idle"
    assert types(client, session.id).count("agent.message") < 5


def test_script_token_in_first_message(client: anthropic.Anthropic) -> None:
    w = world(client)
    session = start_session(client, w, text="please #script:retries_exhausted now")
    assert settled(client, session.id)[-1].stop_reason.type == "retries_exhausted"


def test_default_script_and_run_seconds(start) -> None:
    served: Served = start(default_script="requires_action")
    client = served.client()
    w = world(client)
    session = start_session(client, w, metadata={"emulator_run_seconds": "20"})
    idle = settled(client, session.id)[-1]
    assert idle.stop_reason.type == "requires_action"
    stats = client.beta.sessions.retrieve(session.id).stats
    assert stats.active_seconds is not None
    assert stats.active_seconds >= 10


def test_later_user_message_runs_another_turn(client: anthropic.Anthropic) -> None:
    w = world(client)
    session = start_session(client, w)
    settled(client, session.id)
    client.beta.sessions.events.send(session.id, events=[user_message("#script:tools")])
    assert settled(client, session.id, 2)[-1].stop_reason.type == "end_turn"
    assert "agent.tool_result" in types(client, session.id)


def test_define_outcome_is_evaluated(client: anthropic.Anthropic) -> None:
    w = world(client)
    session = client.beta.sessions.create(
        agent=w.agent_id,
        environment_id=w.environment_id,
        initial_events=[
            {
                "type": "user.define_outcome",
                "description": "a summary",
                "rubric": {"type": "text", "content": "short"},
            },
            user_message(),
        ],
    )
    settled(client, session.id)
    (outcome,) = client.beta.sessions.retrieve(session.id).outcome_evaluations
    assert outcome.result == "satisfied"
    assert outcome.completed_at is not None
