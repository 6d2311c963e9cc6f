"""Deployments (manual and cron-scheduled runs) and the billing ledger under both models."""

import anthropic
import pytest

from tests.emulator.conftest import Receiver, Served, start_session, user_message, world
from tests.support.servers import wait_for


def make_deployment(client: anthropic.Anthropic, **kwargs):
    w = world(client)
    return client.beta.deployments.create(
        name="nightly",
        agent=w.agent_id,
        environment_id=w.environment_id,
        initial_events=[user_message("go")],
        **kwargs,
    )


def test_manual_run_fires_a_session(served: Served) -> None:
    client = served.client()
    deployment = make_deployment(client, metadata={"team": "x"})
    assert deployment.agent.version == 1
    assert deployment.schedule is None
    run = client.beta.deployments.run(deployment.id)
    assert run.session_id is not None
    assert run.error is None
    assert run.trigger_context.type == "manual"
    session = client.beta.sessions.retrieve(run.session_id)
    assert session.deployment_id == deployment.id
    listed = list(client.beta.sessions.list(deployment_id=deployment.id))
    assert [s.id for s in listed] == [run.session_id]
    assert client.beta.deployment_runs.retrieve(run.id).session_id == run.session_id
    assert [r.id for r in client.beta.deployment_runs.list(deployment_id=deployment.id)] == [run.id]


def test_run_records_an_error_instead_of_a_session(served: Served) -> None:
    client = served.client()
    deployment = make_deployment(client)
    client.beta.environments.archive(deployment.environment_id)
    run = client.beta.deployments.run(deployment.id)
    assert run.session_id is None
    assert run.error is not None
    assert run.error.type == "environment_archived_error"
    errored = list(client.beta.deployment_runs.list(has_error=True))
    assert [r.id for r in errored] == [run.id]


def test_schedule_fires_with_webhooks(start, receiver: Receiver) -> None:
    served = start(speed=600, webhook_urls=[receiver.url], webhook_secrets=[receiver.secret])
    client = served.client()
    deployment = make_deployment(
        client, schedule={"type": "cron", "expression": "* * * * *", "timezone": "UTC"}
    )
    assert deployment.schedule is not None
    assert len(deployment.schedule.upcoming_runs_at or []) == 5
    runs = wait_for(
        lambda: list(
            client.beta.deployment_runs.list(deployment_id=deployment.id, trigger_type="schedule")
        )
    )
    assert runs[0].trigger_context.type == "schedule"
    run_id = runs[-1].id
    wait_for(lambda: receiver.events("deployment_run.succeeded", run_id))
    assert receiver.events("deployment_run.started", run_id)
    paused = client.beta.deployments.pause(deployment.id)
    assert paused.status == "paused"
    assert paused.paused_reason is not None
    assert paused.paused_reason.type == "manual"
    count = len(list(client.beta.deployment_runs.list(deployment_id=deployment.id)))
    manual = client.beta.deployments.run(deployment.id)  # pause blocks schedules only
    assert manual.session_id is not None
    assert client.beta.deployments.unpause(deployment.id).status == "active"
    archived = client.beta.deployments.archive(deployment.id)
    assert archived.archived_at is not None
    assert archived.schedule is not None
    assert archived.schedule.upcoming_runs_at == []
    total = len(list(client.beta.deployment_runs.list(deployment_id=deployment.id)))
    assert total >= count + 1
    assert not receiver.events("deployment_run.started", manual.id)  # manual: no webhooks


def test_bad_cron_is_400(served: Served) -> None:
    client = served.client()
    for expression in ("* * *", "@daily", "61 * * * *", "0 9 * * MON#2"):
        with pytest.raises(anthropic.BadRequestError):
            make_deployment(
                client, schedule={"type": "cron", "expression": expression, "timezone": "UTC"}
            )
    with pytest.raises(anthropic.BadRequestError):
        make_deployment(
            client, schedule={"type": "cron", "expression": "* * * * *", "timezone": "Mars/Olympus"}
        )


def _ended(served: Served, session_id: str) -> None:
    client = served.client()
    wait_for(lambda: client.beta.sessions.retrieve(session_id).status == "idle")


@pytest.mark.parametrize("model", ["exists", "running"])
def test_billing_models(start, model: str) -> None:
    served = start(billing_model=model, run_seconds=30.0)
    client = served.client()
    w = world(client)
    kept = start_session(client, w)
    deleted = start_session(client, w)
    _ended(served, kept.id)
    _ended(served, deleted.id)
    client.beta.sessions.delete(deleted.id)
    first = served.control("GET", "billing")
    assert first["model"] == model
    rows = {r["session_id"]: r for r in first["sessions"]}
    assert rows[deleted.id]["deleted"] is True
    assert rows[kept.id]["running_seconds"] >= 25.0
    wait_for(
        lambda: (
            served.control("GET", "billing")["total_container_seconds"]
            > first["total_container_seconds"] + 10
            or model == "running"
        )
    )
    later = served.control("GET", "billing")
    later_rows = {r["session_id"]: r for r in later["sessions"]}
    # A deleted session stops costing under both models.
    assert later_rows[deleted.id]["container_seconds"] == rows[deleted.id]["container_seconds"]
    if model == "exists":
        # An idle session keeps its container: it keeps costing until deleted.
        assert later_rows[kept.id]["container_seconds"] > rows[kept.id]["container_seconds"]
    else:
        assert later_rows[kept.id]["container_seconds"] == rows[kept.id]["container_seconds"]
    assert later["total_cost_usd"] == pytest.approx(later["total_container_seconds"] / 3600 * 0.08)
    other = "running" if model == "exists" else "exists"
    assert served.control("GET", f"billing?model={other}")["model"] == other
