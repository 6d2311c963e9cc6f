"""The API surface through the real SDK with strict response validation: objects, errors,
pagination, bracketed filters, and the wire details the SDK depends on."""

from datetime import UTC, datetime, timedelta
from typing import Any

import anthropic
import httpx
import pytest

from tests.emulator.conftest import Served, idle_events, start_session, user_message, world
from tests.support.servers import wait_for

BETA = {"anthropic-beta": "managed-agents-2026-04-01", "x-api-key": "k"}


def test_agent_versions_create_update_list(client: anthropic.Anthropic) -> None:
    agent = client.beta.agents.create(
        name="a",
        model="claude-sonnet-4-5",
        tools=[{"type": "agent_toolset_20260401"}],
        metadata={"team": "x"},
    )
    assert agent.version == 1
    assert agent.tools[0].type == "agent_toolset_20260401"
    updated = client.beta.agents.update(agent.id, version=1, system="be brief")
    assert updated.version == 2
    assert updated.system == "be brief"
    assert client.beta.agents.retrieve(agent.id).version == 2
    assert client.beta.agents.retrieve(agent.id, version=1).system is None
    with pytest.raises(anthropic.ConflictError):
        client.beta.agents.update(agent.id, version=1, system="stale")
    assert [a.id for a in client.beta.agents.list()] == [agent.id]


def test_environment_create_retrieve(client: anthropic.Anthropic) -> None:
    env = client.beta.environments.create(name="e", metadata={"k": "v"})
    got = client.beta.environments.retrieve(env.id)
    assert got.config.type == "cloud"
    assert got.metadata == {"k": "v"}


def test_session_lifecycle_objects_pass_strict_validation(client: anthropic.Anthropic) -> None:
    w = world(client)
    session = client.beta.sessions.create(
        agent={"type": "agent", "id": w.agent_id, "version": 1},
        environment_id=w.environment_id,
        title="t",
        metadata={"ticket": "T-1"},
    )
    assert session.status == "idle"
    assert session.agent.version == 1
    assert session.deployment_id is None
    assert session.vault_ids == []
    assert session.outcome_evaluations == []
    updated = client.beta.sessions.update(session.id, title="t2", metadata={"ticket": None})
    assert updated.title == "t2"
    assert updated.metadata == {}
    archived = client.beta.sessions.archive(session.id)
    assert archived.archived_at is not None
    assert archived.status == "terminated"
    deleted = client.beta.sessions.delete(session.id)
    assert deleted.type == "session_deleted"
    with pytest.raises(anthropic.NotFoundError):
        client.beta.sessions.retrieve(session.id)


def test_created_with_initial_events_is_running_then_idle(client: anthropic.Anthropic) -> None:
    w = world(client)
    session = start_session(client, w)
    assert session.status == "running"
    wait_for(lambda: client.beta.sessions.retrieve(session.id).status == "idle")
    done = client.beta.sessions.retrieve(session.id)
    assert done.usage.input_tokens
    assert done.usage.output_tokens
    assert done.usage.list_cost is not None
    assert done.stats.active_seconds is not None
    assert done.stats.active_seconds > 0
    types = [e.type for e in client.beta.sessions.events.list(session.id)]
    assert types == [
        "user.message",
        "session.status_running",
        "span.model_request_start",
        "agent.message",
        "span.model_request_end",
        "session.status_idle",
    ]


def test_agent_with_overrides(client: anthropic.Anthropic) -> None:
    w = world(client)
    session = client.beta.sessions.create(
        agent={"type": "agent_with_overrides", "id": w.agent_id, "system": "override"},
        environment_id=w.environment_id,
    )
    assert session.agent.system == "override"


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ({"agent": 5}, "agent"),
        ({"agent": {"type": "inline", "id": "x"}}, "agent.type"),
        ({"initial_events": [{"type": "user.interrupt"}]}, "initial_events[0].type"),
        ({"initial_events": [user_message()] * 51}, "initial_events"),
        ({"environment_id": None}, "environment_id"),
    ],
)
def test_bad_session_bodies_are_400(served: Served, body: dict[str, Any], fragment: str) -> None:
    client = served.client()
    w = world(client)
    payload = {"agent": w.agent_id, "environment_id": w.environment_id, **body}
    with pytest.raises(anthropic.BadRequestError) as caught:
        client.post("/v1/sessions", body=payload, cast_to=object, options={"headers": BETA})
    assert fragment in str(caught.value)


@pytest.mark.parametrize(
    "metadata",
    [
        {f"k{i}": "v" for i in range(17)},
        {"k" * 65: "v"},
        {"k": "v" * 513},
    ],
)
def test_invalid_metadata_has_error_code(
    client: anthropic.Anthropic, metadata: dict[str, str]
) -> None:
    w = world(client)
    with pytest.raises(anthropic.BadRequestError) as caught:
        client.beta.sessions.create(
            agent=w.agent_id, environment_id=w.environment_id, metadata=metadata
        )
    assert caught.value.status_code == 400
    body = caught.value.body
    assert isinstance(body, dict)
    assert body["error"]["details"]["error_code"] == "invalid_metadata"


def test_unknown_agent_or_environment_is_404(client: anthropic.Anthropic) -> None:
    w = world(client)
    with pytest.raises(anthropic.NotFoundError):
        client.beta.sessions.create(agent="agent_nope", environment_id=w.environment_id)
    with pytest.raises(anthropic.NotFoundError):
        client.beta.sessions.create(agent=w.agent_id, environment_id="env_nope")


def test_error_envelope_and_headers(served: Served) -> None:
    response = httpx.get(f"{served.url}/v1/sessions/sesn_missing", headers=BETA)
    assert response.status_code == 404
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert body["type"] == "error"
    assert body["error"]["type"] == "not_found_error"
    assert body["request_id"].startswith("req_")
    assert response.headers["request-id"] == body["request_id"]


def test_missing_beta_header_is_404_and_files_need_none(served: Served) -> None:
    response = httpx.get(f"{served.url}/v1/sessions", headers={"x-api-key": "k"})
    assert response.status_code == 404
    assert response.json()["error"]["type"] == "not_found_error"
    files = httpx.get(f"{served.url}/v1/files", headers={"x-api-key": "k"})
    assert files.status_code == 200
    assert files.json() == {"data": [], "next_page": None}


def test_missing_key_is_401_and_both_auth_forms_work(start) -> None:
    served = start(api_key="sk-right")
    response = httpx.get(
        f"{served.url}/v1/sessions", headers={"anthropic-beta": BETA["anthropic-beta"]}
    )
    assert response.status_code == 401
    assert response.json()["error"]["type"] == "authentication_error"
    with pytest.raises(anthropic.AuthenticationError):
        served.client(api_key="sk-wrong").beta.sessions.list()
    assert served.client(api_key="sk-right").beta.sessions.list().data == []
    ok = httpx.get(
        f"{served.url}/v1/sessions",
        headers={
            "x-api-key": "sk-right",
            "anthropic-beta": BETA["anthropic-beta"],
            "anthropic-version": "2023-06-01",
        },
    )
    assert ok.status_code == 200


def test_pagination_walks_every_page(client: anthropic.Anthropic, served: Served) -> None:
    w = world(client)
    ids = {
        client.beta.sessions.create(agent=w.agent_id, environment_id=w.environment_id).id
        for _ in range(7)
    }
    first = client.beta.sessions.list(limit=3)
    assert len(first.data) == 3
    assert first.prev_page is None
    assert first.next_page is not None
    seen = [s.id for s in client.beta.sessions.list(limit=3)]  # auto-pagination
    assert set(seen) == ids
    assert len(seen) == 7
    created = [s.created_at for s in client.beta.sessions.list(limit=3)]
    assert created == sorted(created, reverse=True)  # default order desc
    last = httpx.get(
        f"{served.url}/v1/sessions",
        params={"limit": 3, "page": first.next_page},
        headers=BETA,
    ).json()
    assert last["prev_page"] is not None
    third = httpx.get(
        f"{served.url}/v1/sessions", params={"limit": 3, "page": last["next_page"]}, headers=BETA
    ).json()
    assert len(third["data"]) == 1
    assert third["next_page"] is None
    reversed_cursor = httpx.get(
        f"{served.url}/v1/sessions",
        params={"limit": 3, "page": first.next_page, "order": "asc"},
        headers=BETA,
    )
    assert reversed_cursor.status_code == 400


def test_bracketed_filters(client: anthropic.Anthropic, served: Served) -> None:
    w = world(client)
    idle = client.beta.sessions.create(agent=w.agent_id, environment_id=w.environment_id)
    ran = start_session(client, w, script="requires_action")
    wait_for(lambda: idle_events(client, ran.id))
    cutoff = datetime.now(UTC) + timedelta(seconds=1)
    assert [s.id for s in client.beta.sessions.list(statuses=["idle"])] == [ran.id, idle.id]
    assert [s.id for s in client.beta.sessions.list(statuses=["running"])] == []
    assert list(client.beta.sessions.list(created_at_gte=cutoff)) == []
    assert len(list(client.beta.sessions.list(created_at_lt=cutoff))) == 2
    assert [s.id for s in client.beta.sessions.list(order="asc")] == [idle.id, ran.id]
    assert len(list(client.beta.sessions.list(agent_id=w.agent_id, agent_version=1))) == 2
    assert list(client.beta.sessions.list(agent_id=w.agent_id, agent_version=2)) == []
    kinds = {
        e.type
        for e in client.beta.sessions.events.list(
            ran.id, types=["agent.tool_use", "session.status_idle"]
        )
    }
    assert kinds == {"agent.tool_use", "session.status_idle"}
    # The same filter as the SDK sends it, brackets percent-encoded.
    raw = httpx.get(
        f"{served.url}/v1/sessions?statuses%5B%5D=idle&statuses%5B%5D=terminated", headers=BETA
    ).json()
    assert len(raw["data"]) == 2
    events = list(client.beta.sessions.events.list(ran.id, order="desc", limit=2))
    stamps = [str(e.processed_at) for e in events]
    assert stamps == sorted(stamps, reverse=True)


def test_archived_sessions_hidden_unless_asked(client: anthropic.Anthropic) -> None:
    w = world(client)
    session = client.beta.sessions.create(agent=w.agent_id, environment_id=w.environment_id)
    client.beta.sessions.archive(session.id)
    assert list(client.beta.sessions.list()) == []
    assert [s.id for s in client.beta.sessions.list(include_archived=True)] == [session.id]


def test_files_listed_by_scope(client: anthropic.Anthropic) -> None:
    w = world(client)
    session = start_session(client, w, script="files:2")
    other = start_session(client, w, script="files:1")
    wait_for(lambda: idle_events(client, session.id) and idle_events(client, other.id))
    files = list(client.beta.files.list(scope_id=session.id))
    assert len(files) == 2
    assert all(f.scope is not None and f.scope.id == session.id for f in files)


def test_unknown_script_is_400(client: anthropic.Anthropic) -> None:
    w = world(client)
    with pytest.raises(anthropic.BadRequestError):
        start_session(client, w, script="no_such_script")


def test_send_events_echoes(client: anthropic.Anthropic) -> None:
    w = world(client)
    session = client.beta.sessions.create(agent=w.agent_id, environment_id=w.environment_id)
    sent = client.beta.sessions.events.send(session.id, events=[user_message("again")])
    assert sent.data is not None
    assert sent.data[0].type == "user.message"
    assert sent.data[0].id.startswith("sevt_")
    wait_for(lambda: idle_events(client, session.id))


def test_deleted_session_events_are_404(client: anthropic.Anthropic) -> None:
    w = world(client)
    session = client.beta.sessions.create(agent=w.agent_id, environment_id=w.environment_id)
    client.beta.sessions.delete(session.id)
    with pytest.raises(anthropic.NotFoundError):
        client.beta.sessions.events.send(session.id, events=[user_message()])
    with pytest.raises(anthropic.NotFoundError):
        client.beta.sessions.delete(session.id)
