"""Session budgets as the API documents them: enforced from the scripted usage (pause, resume
on a raise or removal, the webhook once per value), the update rules and their error codes,
and `model_not_budgetable` for sessions and deployments."""

from typing import Any

import anthropic
import pytest

from tests.emulator.conftest import (
    Receiver,
    Served,
    World,
    idle_events,
    start_session,
    user_message,
    world,
)
from tests.support.servers import wait_for


def budget(cents: int) -> Any:
    return {"type": "limit", "max_list_cost": {"amount": str(cents), "currency": "USD"}}


def types(client: anthropic.Anthropic, session_id: str) -> list[str]:
    return [e.type for e in client.beta.sessions.events.list(session_id)]


def of_type(client: anthropic.Anthropic, session_id: str, kind: str) -> list[Any]:
    return list(client.beta.sessions.events.list(session_id, types=[kind]))  # type: ignore[list-item]


def idles(client: anthropic.Anthropic, session_id: str, count: int) -> list[Any]:
    found: list[Any] = wait_for(
        lambda: len(idle_events(client, session_id)) >= count and idle_events(client, session_id)
    )
    return found


def reason(caught: pytest.ExceptionInfo[anthropic.APIStatusError]) -> str | None:
    """Where a client finds why: `error.details.error_code`, also `exc.error_code`."""
    body: Any = caught.value.body
    assert caught.value.error_code == body["error"]["details"]["error_code"]
    return caught.value.error_code


def test_budget_pauses_at_the_cap_and_resumes_on_raise_and_removal(
    start, receiver: Receiver
) -> None:
    served: Served = start(webhook_urls=[receiver.url], webhook_secrets=[receiver.secret])
    client = served.client()
    w = world(client)
    # Each agent message costs 0.63 cents; list_cost counts whole cents: 1, 1, 2, 3, 3, 4, 4, 5.
    session = start_session(client, w, script="long:10", budget=budget(3))
    paused = idles(client, session.id, 1)[-1]
    assert paused.stop_reason.type == "budget_reached"
    assert len(of_type(client, session.id, "agent.message")) == 4
    assert types(client, session.id)[-3:] == [
        "span.model_request_end",
        "session.usage",
        "session.status_idle",
    ]
    (usage,) = of_type(client, session.id, "session.usage")
    assert usage.usage.list_cost.amount == "3"
    assert usage.budget.max_list_cost.amount == "3"
    fetched = client.beta.sessions.retrieve(session.id)
    assert fetched.status == "idle"
    assert fetched.usage.list_cost is not None
    assert fetched.usage.list_cost.amount == "3"
    wait_for(lambda: receiver.events("session.budget_reached", session.id))

    # Paused: a message is refused, an interrupt is dropped (not echoed, the pause holds).
    with pytest.raises(anthropic.BadRequestError):
        client.beta.sessions.events.send(session.id, events=[user_message()])
    sent = client.beta.sessions.events.send(session.id, events=[{"type": "user.interrupt"}])
    assert not sent.data
    assert "user.interrupt" not in types(client, session.id)
    assert len(idle_events(client, session.id)) == 1
    assert client.beta.sessions.retrieve(session.id).status == "idle"

    # A raise resumes the paused turn where it stopped, until the new cap.
    client.beta.sessions.update(session.id, budget=budget(5))
    (updated,) = of_type(client, session.id, "session.updated")
    assert updated.budget.max_list_cost.amount == "5"
    again = idles(client, session.id, 2)[-1]
    assert again.stop_reason.type == "budget_reached"
    assert len(of_type(client, session.id, "agent.message")) == 8
    # The new value re-armed the webhook: one per value.
    wait_for(lambda: len(receiver.events("session.budget_reached", session.id)) == 2)

    # Removal resumes too, and the turn runs to its end.
    client.beta.sessions.update(session.id, budget=None)
    assert of_type(client, session.id, "session.updated")[-1].budget is None
    done = idles(client, session.id, 3)[-1]
    assert done.stop_reason.type == "end_turn"
    assert len(of_type(client, session.id, "agent.message")) == 10
    assert client.beta.sessions.retrieve(session.id).budget is None

    # Once removed, it cannot come back.
    with pytest.raises(anthropic.BadRequestError) as caught:
        client.beta.sessions.update(session.id, budget=budget(500))
    assert reason(caught) == "budget_create_only"
    assert len(receiver.events("session.budget_reached", session.id)) == 2


def test_budget_update_rules(client: anthropic.Anthropic) -> None:
    w = world(client)
    unbudgeted = start_session(client, w)
    with pytest.raises(anthropic.BadRequestError) as caught:
        client.beta.sessions.update(unbudgeted.id, budget=budget(100))
    assert reason(caught) == "budget_create_only"

    capped = start_session(client, w, budget=budget(100))
    idles(client, capped.id, 1)  # one message: 1 cent spent
    for at_or_below in (0, 1):
        with pytest.raises(anthropic.BadRequestError) as caught:
            client.beta.sessions.update(capped.id, budget=budget(at_or_below))
        assert reason(caught) == "budget_not_raised"
    # A rejected update changes nothing, not even the fields beside the budget.
    with pytest.raises(anthropic.BadRequestError):
        client.beta.sessions.update(capped.id, title="renamed", budget=budget(1))
    assert client.beta.sessions.retrieve(capped.id).title is None
    assert "session.updated" not in types(client, capped.id)

    raised = client.beta.sessions.update(capped.id, budget=budget(200))
    assert raised.budget is not None
    assert raised.budget.max_list_cost.amount == "200"
    (updated,) = of_type(client, capped.id, "session.updated")
    assert updated.budget.max_list_cost.amount == "200"

    terminated = start_session(client, w, script="terminate", budget=budget(100))
    wait_for(lambda: client.beta.sessions.retrieve(terminated.id).status == "terminated")
    with pytest.raises(anthropic.BadRequestError):
        client.beta.sessions.update(terminated.id, budget=budget(500))


def test_forced_budget_pause_without_a_budget_resumes_on_null(
    client: anthropic.Anthropic,
) -> None:
    w = world(client)
    session = start_session(client, w, script="budget_reached")
    assert idles(client, session.id, 1)[-1].stop_reason.type == "budget_reached"
    (usage,) = of_type(client, session.id, "session.usage")
    assert usage.budget is None
    client.beta.sessions.update(session.id, budget=None)
    assert idles(client, session.id, 2)[-1].stop_reason.type == "end_turn"


def unpriced_world(client: anthropic.Anthropic, model: Any) -> World:
    agent = client.beta.agents.create(name="internal", model=model)
    env = client.beta.environments.create(name="env")
    return World(agent.id, env.id)


@pytest.mark.parametrize("model", ["claude-internal-preview", {"id": "custom-model"}])
def test_unpriced_model_is_not_budgetable(client: anthropic.Anthropic, model: Any) -> None:
    w = unpriced_world(client, model)
    with pytest.raises(anthropic.BadRequestError) as caught:
        start_session(client, w, budget=budget(100))
    assert reason(caught) == "model_not_budgetable"
    assert start_session(client, w).budget is None  # without a budget it runs


def test_model_override_decides_budgetability(client: anthropic.Anthropic) -> None:
    priced = world(client)
    with pytest.raises(anthropic.BadRequestError) as caught:
        client.beta.sessions.create(
            agent={"type": "agent_with_overrides", "id": priced.agent_id, "model": "custom-model"},
            environment_id=priced.environment_id,
            budget=budget(100),
        )
    assert reason(caught) == "model_not_budgetable"
    unpriced = unpriced_world(client, "claude-internal-preview")
    session = client.beta.sessions.create(
        agent={
            "type": "agent_with_overrides",
            "id": unpriced.agent_id,
            "model": "claude-haiku-4-5",
        },
        environment_id=unpriced.environment_id,
        budget=budget(100),
    )
    assert session.budget is not None


def test_every_callable_agent_needs_a_list_price(client: anthropic.Anthropic) -> None:
    w = world(client)
    helper = client.beta.agents.create(name="helper", model="custom-model")
    coordinator = client.beta.agents.create(
        name="coordinator",
        model="claude-opus-4-7",
        multiagent={
            "type": "coordinator",
            "agents": [{"type": "agent", "id": helper.id, "version": 1}],
        },
    )
    with pytest.raises(anthropic.BadRequestError) as caught:
        client.beta.sessions.create(
            agent=coordinator.id, environment_id=w.environment_id, budget=budget(100)
        )
    assert reason(caught) == "model_not_budgetable"
    for advisor, ok in (("custom-model", False), ("claude-haiku-4-5", True)):
        agent = client.beta.agents.create(
            name="advised",
            model="claude-sonnet-4-6",
            multiagent={"type": "coordinator", "agents": [{"type": "advisor", "model": advisor}]},
        )
        if ok:
            created = client.beta.sessions.create(
                agent=agent.id, environment_id=w.environment_id, budget=budget(100)
            )
            assert created.budget is not None
        else:
            with pytest.raises(anthropic.BadRequestError) as caught:
                client.beta.sessions.create(
                    agent=agent.id, environment_id=w.environment_id, budget=budget(100)
                )
            assert reason(caught) == "model_not_budgetable"


def test_deployment_budget_needs_a_priced_agent_and_reaches_its_sessions(
    client: anthropic.Anthropic,
) -> None:
    w = world(client)
    unpriced = client.beta.agents.create(name="internal", model="claude-internal-preview")
    common: Any = {
        "name": "nightly",
        "environment_id": w.environment_id,
        "initial_events": [user_message("go")],
    }
    with pytest.raises(anthropic.BadRequestError) as caught:
        client.beta.deployments.create(agent=unpriced.id, budget=budget(100), **common)
    assert reason(caught) == "model_not_budgetable"
    assert client.beta.deployments.create(agent=unpriced.id, **common).budget is None

    deployment = client.beta.deployments.create(agent=w.agent_id, budget=budget(100), **common)
    with pytest.raises(anthropic.BadRequestError) as caught:
        client.beta.deployments.update(deployment.id, agent=unpriced.id)
    assert reason(caught) == "model_not_budgetable"
    assert client.beta.deployments.retrieve(deployment.id).agent.id == w.agent_id

    run = client.beta.deployments.run(deployment.id)
    assert run.session_id is not None
    stamped = client.beta.sessions.retrieve(run.session_id).budget
    assert stamped is not None
    assert stamped.max_list_cost.amount == "100"
