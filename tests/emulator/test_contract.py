"""Issue 17: the emulator models the documented contract, each part a knob with the documented
default: attempts per event, auto-disable (about 20 failed deliveries in a row, or a 3xx) and
manual re-enable, the organization webhooks API reflecting it, Console test events, when a
session's updated_at moves, the second webhook family sent without duplicates. All through the
real SDK with strict response validation, over loopback."""

import asyncio
import typing
from collections import Counter
from collections.abc import Callable
from contextlib import ExitStack
from datetime import datetime
from typing import Any

import anthropic
import httpx
import pytest
from anthropic.types.beta import BetaWebhookEvent
from anthropic.types.beta.beta_webhook_event_data import BetaWebhookEventData
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from emulator.clock import rfc3339
from emulator.config import EmulatorConfig
from emulator.sender import private_address
from idlehook.cli import build_parser
from idlehook.cli.emulator import config_from_args
from tests.emulator.conftest import Receiver, Served, new_secret, start_session, world
from tests.support.servers import serve, wait_for

HOOKS_BETA = {"anthropic-beta": "webhooks-2026-10-07", "x-api-key": "k"}


def hooked(start: Callable[..., Served], receiver: Receiver, **config: Any) -> Served:
    config.setdefault("webhook_secrets", [receiver.secret])
    served: Served = start(webhook_urls=[receiver.url], **config)
    return served


def attempts(served: Served) -> list[dict[str, Any]]:
    log: list[dict[str, Any]] = served.control("GET", "webhook-log")["attempts"]
    return log


def endpoints(served: Served) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = served.control("GET", "webhook-endpoints")["endpoints"]
    return found


def only_endpoint(served: Served) -> dict[str, Any]:
    (endpoint,) = endpoints(served)
    return endpoint


def settled(served: Served) -> bool:
    return bool(served.control("GET", "stats")["webhooks"]["pending"] == 0)


def emit_one(served: Served, client: anthropic.Anthropic, name: str) -> None:
    """One environment.created event, its every attempt finished before returning."""
    client.beta.environments.create(name=name)
    wait_for(lambda: settled(served))


def another_receiver(stack: ExitStack, secret: str = "") -> Receiver:
    rec = Receiver(secret=secret or new_secret())
    rec.url = stack.enter_context(serve(rec.app())) + "/hook"
    return rec


def union_types() -> set[str]:
    (members, *_) = typing.get_args(BetaWebhookEventData)
    return {
        literal
        for member in typing.get_args(members)
        for literal in typing.get_args(member.model_fields["type"].annotation)
    }


# -- 1. attempts per event ----------------------------------------------------------------------


def test_cli_knobs_default_to_the_documented_contract() -> None:
    config, _ = config_from_args(build_parser().parse_args(["emulator"]))
    assert config.webhook_max_attempts == 3
    assert config.disable_after_failed_deliveries == 20
    assert config.updated_at_moves == "some"
    assert config == EmulatorConfig(webhook_secrets=config.webhook_secrets)
    chosen, _ = config_from_args(
        build_parser().parse_args(
            [
                "emulator",
                "--attempts",
                "5",
                "--disable-after",
                "7",
                "--updated-at-moves",
                "always",
            ]
        )
    )
    assert chosen.webhook_max_attempts == 5
    assert chosen.disable_after_failed_deliveries == 7
    assert chosen.updated_at_moves == "always"
    with pytest.raises(ValueError, match="webhook_max_attempts"):
        config_from_args(build_parser().parse_args(["emulator", "--attempts", "0"]))


@pytest.mark.parametrize("attempts_per_event", [1, 5])
def test_attempts_per_event(start, receiver: Receiver, attempts_per_event: int) -> None:
    receiver.default = 500
    served = hooked(start, receiver, speed=1000, webhook_max_attempts=attempts_per_event)
    emit_one(served, served.client(), "e")
    assert len(receiver.received) == attempts_per_event
    assert [a["attempt"] for a in attempts(served)] == list(range(1, attempts_per_event + 1))
    assert len({r.headers["webhook-id"] for r in receiver.received}) == 1


# -- 2. auto-disable and re-enable --------------------------------------------------------------


def test_twenty_failed_deliveries_in_a_row_disable_by_default(start, receiver: Receiver) -> None:
    receiver.default = 503
    served = hooked(start, receiver, speed=1000, webhook_max_attempts=1)
    client = served.client()
    for i in range(19):
        emit_one(served, client, f"e{i}")
    endpoint = only_endpoint(served)
    assert endpoint["enabled"] is True
    assert endpoint["consecutive_failed_deliveries"] == 19
    emit_one(served, client, "e19")
    endpoint = only_endpoint(served)
    assert endpoint["state"] == "disabled"
    assert endpoint["disabled_reason"] == "sustained_failure"
    emit_one(served, client, "after")  # a disabled endpoint gets nothing more
    assert len(receiver.received) == 20
    assert attempts(served)[-1]["outcome"] == "endpoint_disabled"


def test_retries_count_as_deliveries_and_stop_once_disabled(start, receiver: Receiver) -> None:
    receiver.default = 500
    served = hooked(start, receiver, speed=1000)  # three attempts per event
    client = served.client()
    for i in range(7):
        emit_one(served, client, f"e{i}")
    # 6 events x 3 attempts, then the 7th event's 2nd attempt is the 20th failure.
    assert len(receiver.received) == 20
    assert only_endpoint(served)["disabled_reason"] == "sustained_failure"
    assert [a["outcome"] for a in attempts(served)][-1] == "failed"


def test_one_success_resets_the_count(start, receiver: Receiver) -> None:
    receiver.script = [503] * 19 + [204] + [503] * 19
    served = hooked(start, receiver, speed=1000, webhook_max_attempts=1)
    client = served.client()
    for i in range(39):
        emit_one(served, client, f"e{i}")
    endpoint = only_endpoint(served)
    assert endpoint["enabled"] is True
    assert endpoint["consecutive_failed_deliveries"] == 19
    assert endpoint["delivered"] == 1
    receiver.default = 503
    emit_one(served, client, "the 20th in a row")
    assert only_endpoint(served)["enabled"] is False


def test_connection_errors_and_timeouts_are_failed_deliveries(start, stack: ExitStack) -> None:
    async def slow(request: Request) -> Response:
        await asyncio.sleep(1.0)
        return Response(status_code=200)

    slow_url = stack.enter_context(serve(Starlette(routes=[Route("/", slow, methods=["POST"])])))
    with serve(Starlette()) as gone:
        pass  # closed again: nothing listens there now
    served = start(
        speed=1000,
        webhook_urls=[f"{gone}/hook", f"{slow_url}/"],
        webhook_secrets=[new_secret()],
        webhook_max_attempts=1,
        webhook_timeout_seconds=0.1,
        disable_after_failed_deliveries=3,
    )
    client = served.client()
    for i in range(3):
        emit_one(served, client, f"e{i}")
    states = {e["url"]: e for e in endpoints(served)}
    assert states[f"{gone}/hook"]["disabled_reason"] == "sustained_failure"
    assert states[f"{slow_url}/"]["disabled_reason"] == "sustained_failure"
    errors = {a["error"] for a in attempts(served)}
    assert "ConnectError" in errors
    assert "ReadTimeout" in errors


def test_a_redirect_disables_at_once_without_retrying(start, receiver: Receiver) -> None:
    receiver.default = 307
    served = hooked(start, receiver, speed=1000)
    emit_one(served, served.client(), "e")
    assert len(receiver.received) == 1  # two attempts were left
    endpoint = only_endpoint(served)
    assert (endpoint["state"], endpoint["disabled_reason"]) == ("disabled", "redirect")


def test_manual_reenable_replays_nothing(start, receiver: Receiver) -> None:
    receiver.default = 302
    served = hooked(start, receiver, speed=1000)
    client = served.client()
    assert only_endpoint(served)["enabled"] is True  # listed before any event
    emit_one(served, client, "disables")
    emit_one(served, client, "missed")
    receiver.default = 200
    enabled = served.control("POST", "webhook-endpoints/enable", json={"url": receiver.url})
    assert (enabled["state"], enabled["disabled_reason"]) == ("enabled", None)
    assert enabled["consecutive_failed_deliveries"] == 0
    emit_one(served, client, "after")
    assert [r.event["data"]["type"] for r in receiver.received] == ["environment.created"] * 2
    missed = [a for a in attempts(served) if a["outcome"] == "endpoint_disabled"]
    assert len(missed) == 1
    assert missed[0]["event_id"] not in {r.headers["webhook-id"] for r in receiver.received}
    disabled = served.control("POST", "webhook-endpoints/disable", json={"url": receiver.url})
    assert (disabled["state"], disabled["disabled_reason"]) == ("disabled", "caller")
    unknown = httpx.post(
        f"{served.url}/_emulator/webhook-endpoints/enable", json={"url": "http://nowhere/"}
    )
    assert unknown.status_code == 404


def test_a_non_public_address_disables_at_once_when_asked(start, receiver: Receiver) -> None:
    served = hooked(
        start, receiver, disable_on_private_address=True, org_webhooks_include_workspace=True
    )
    client = served.client()
    emit_one(served, client, "e")
    assert receiver.received == []  # loopback: nothing was sent
    assert [a["outcome"] for a in attempts(served)] == ["invalid_address"]
    (listed,) = client.beta.organization.webhooks.list()
    assert (listed.state, listed.disabled_reason) == ("disabled", "invalid_address")


async def test_which_addresses_are_not_public() -> None:
    assert await private_address("https://10.1.2.3/hook")
    assert await private_address("http://127.0.0.1:8000/hook")
    assert await private_address("https://[::1]/hook")
    assert await private_address("https://169.254.169.254/latest")
    assert not await private_address("https://8.8.8.8/hook")


# -- 2b. the organization webhooks API ------------------------------------------------------------


def test_organization_endpoint_reflects_the_senders_state(start, stack: ExitStack) -> None:
    served = start(speed=1000)
    client = served.client()
    hook = another_receiver(stack)
    new = client.beta.organization.webhooks.create(
        url=hook.url, enabled_events=["external_key.failed"], name="keys"
    )
    assert new.signing_secret.startswith("whsec_")
    assert (new.state, new.disabled_reason, new.description) == ("enabled", "", "")
    hook.secret = new.signing_secret

    def emit(data_type: str = "external_key.failed") -> None:
        served.control("POST", "webhooks/emit", json={"type": data_type, "id": "ekey_1"})
        wait_for(lambda: settled(served))

    emit()
    (got,) = hook.received
    assert got.verified
    assert "workspace_id" not in got.event["data"]
    parsed = client.beta.webhooks.unwrap(got.body, headers=got.headers, key=new.signing_secret)
    assert parsed.data.type == "external_key.failed"
    emit("external_storage.failed")  # not subscribed
    client.beta.environments.create(name="a workspace event")  # not an organization type
    wait_for(lambda: settled(served))
    assert len(hook.received) == 1

    hook.default = 301
    emit()
    disabled = client.beta.organization.webhooks.retrieve(new.id)
    assert (disabled.state, disabled.disabled_reason) == ("disabled", "redirect")
    assert [e.state for e in client.beta.organization.webhooks.list()] == ["disabled"]
    emit()  # missed for good
    assert len(hook.received) == 2

    hook.default = 200
    again = client.beta.organization.webhooks.update(new.id, state="enabled")
    assert (again.state, again.disabled_reason) == ("enabled", "")
    emit()
    assert len(hook.received) == 3
    by_hand = client.beta.organization.webhooks.update(new.id, state="disabled")
    assert (by_hand.state, by_hand.disabled_reason) == ("disabled", "")
    emit()
    assert len(hook.received) == 3


def test_organization_endpoint_crud_and_secret_rotation(start, stack: ExitStack) -> None:
    served = start(speed=1000)
    client = served.client()
    hook = another_receiver(stack)
    hooks = client.beta.organization.webhooks
    created = [
        hooks.create(url=hook.url, enabled_events=["external_storage.failed"], name=f"h{i}")
        for i in range(5)
    ]
    hook.secret = created[0].signing_secret
    listed = list(hooks.list(limit=2))  # pages by after_id until has_more is false
    assert [e.id for e in listed] == [e.id for e in reversed(created)]
    assert [e.id for e in hooks.list(order="asc", limit=10)] == [e.id for e in created]
    page = hooks.list(limit=2, order="asc", after_id=created[1].id)
    assert [e.id for e in page.data] == [created[2].id, created[3].id]
    assert page.has_more is True

    updated = hooks.update(created[0].id, description="d", enabled_events=[])
    assert updated.description == "d"
    assert updated.enabled_events == ["external_storage.failed"]  # [] leaves them
    assert updated.updated_at >= updated.created_at
    for other in created[1:]:
        hooks.delete(other.id)
    rotated = hooks.regenerate_signing_secret(created[0].id).signing_secret
    served.control("POST", "webhooks/emit", json={"type": "external_storage.failed", "id": "s"})
    wait_for(lambda: hook.received)
    assert hook.received[0].verified is False  # signed with the new secret only
    hook.secret = rotated
    served.control("POST", "webhooks/test", json={"id": created[0].id})
    wait_for(lambda: len(hook.received) == 2)
    assert hook.received[1].verified

    assert hooks.retrieve(created[0].id).id == created[0].id
    with pytest.raises(anthropic.NotFoundError):
        hooks.retrieve(created[1].id)
    with pytest.raises(anthropic.BadRequestError, match="organization event type"):
        hooks.create(url=hook.url, enabled_events=["session.status_idled"])  # type: ignore[list-item]
    with pytest.raises(anthropic.BadRequestError):
        hooks.create(url=hook.url, enabled_events=[])
    no_beta = httpx.get(f"{served.url}/v1/organizations/webhooks", headers={"x-api-key": "k"})
    assert no_beta.status_code == 404
    with_beta = httpx.get(f"{served.url}/v1/organizations/webhooks", headers=HOOKS_BETA)
    assert with_beta.status_code == 200


def test_at_most_32_organization_endpoints(start) -> None:
    served = start()
    hooks = served.client().beta.organization.webhooks
    for i in range(32):
        hooks.create(url=f"https://h{i}.example/", enabled_events=["external_key.failed"])
    with pytest.raises(anthropic.BadRequestError, match="at most 32"):
        hooks.create(url="https://one-more.example/", enabled_events=["external_key.failed"])


def test_workspace_endpoints_through_the_organization_api_behind_a_knob(
    start, receiver: Receiver
) -> None:
    hidden = hooked(start, receiver)
    assert list(hidden.client().beta.organization.webhooks.list()) == []
    receiver.default = 308
    served = hooked(start, receiver, speed=1000, org_webhooks_include_workspace=True)
    client = served.client()
    (listed,) = client.beta.organization.webhooks.list()
    assert (listed.url, listed.state, listed.enabled_events) == (receiver.url, "enabled", [])
    emit_one(served, client, "e")
    seen = client.beta.organization.webhooks.retrieve(listed.id)
    assert (seen.state, seen.disabled_reason) == ("disabled", "redirect")
    receiver.default = 200
    back = client.beta.organization.webhooks.update(listed.id, state="enabled")
    assert back.state == "enabled"
    emit_one(served, client, "e2")
    assert len(receiver.received) == 2
    with pytest.raises(anthropic.BadRequestError, match="Console"):
        client.beta.organization.webhooks.update(listed.id, name="renamed")
    with pytest.raises(anthropic.BadRequestError, match="Console"):
        client.beta.organization.webhooks.delete(listed.id)


# -- 3. Console test events -----------------------------------------------------------------------


def test_console_test_event_is_signed_and_unknown_to_the_sdk(start, receiver: Receiver) -> None:
    served = hooked(start, receiver)
    sent = served.control("POST", "webhooks/test", json={})["event"]
    (got,) = wait_for(lambda: receiver.received)
    assert got.verified
    assert got.headers["webhook-id"] == sent["id"] == got.event["id"]
    assert got.event["type"] == "event"
    data_type = got.event["data"]["type"]
    assert data_type not in union_types()
    with pytest.raises(ValueError, match="data"):  # a strict parse of the body fails
        BetaWebhookEvent.model_validate(got.event)
    sdk = anthropic.Anthropic(api_key="k", base_url=served.url, webhook_key=receiver.secret)
    loose = sdk.beta.webhooks.unwrap(got.body, headers=got.headers)  # verifies, then parses
    assert loose.data.type == data_type


def test_test_events_ignore_subscriptions_and_count_as_failures(
    start, receiver: Receiver, stack: ExitStack
) -> None:
    receiver.default = 400  # a receiver that rejects shapes it does not know
    served = hooked(start, receiver, speed=1000, webhook_max_attempts=1)
    client = served.client()
    org = another_receiver(stack)
    created = client.beta.organization.webhooks.create(
        url=org.url, enabled_events=["user_profile.program_status_updated"]
    )
    org.secret = created.signing_secret
    for _ in range(20):
        served.control("POST", "webhooks/test", json={})
        wait_for(lambda: settled(served))
    assert len(org.received) == 20  # not subscribed to it, and got it anyway
    assert all(r.verified for r in org.received)
    states = {e["url"]: e for e in endpoints(served)}
    assert states[receiver.url]["disabled_reason"] == "sustained_failure"
    assert states[org.url]["enabled"] is True


def test_test_event_type_and_body_are_choosable(start, receiver: Receiver) -> None:
    served = hooked(start, receiver)
    served.control(
        "POST",
        "webhooks/test",
        json={"url": receiver.url, "type": "session.status_idled", "data_id": "sesn_test"},
    )
    served.control(
        "POST", "webhooks/test", json={"endpoints": [receiver.url], "body": {"hello": "world"}}
    )
    wait_for(lambda: len(receiver.received) == 2)
    first, second = sorted(receiver.received, key=lambda r: "hello" in r.event)
    assert first.event["data"] == {
        "id": "sesn_test",
        "type": "session.status_idled",
        "organization_id": "org_emulator",
        "workspace_id": "wrkspc_emulator",
    }
    assert second.event["hello"] == "world"
    assert second.verified
    assert second.headers["webhook-id"].startswith("wevt_")


# -- 4. updated_at ---------------------------------------------------------------------------------


def _moves(served: Served) -> tuple[datetime, datetime, datetime]:
    """(created_at, updated_at after a whole turn, updated_at after a title update)."""
    client = served.client()
    session = start_session(client, world(client))
    wait_for(lambda: client.beta.sessions.retrieve(session.id).status == "idle")
    rested = client.beta.sessions.retrieve(session.id)
    assert rested.updated_at is not None
    wait_for(lambda: served.emulator.clock.now() > rested.updated_at)
    titled = client.beta.sessions.update(session.id, title="new title")
    assert titled.updated_at is not None
    return rested.created_at, rested.updated_at, titled.updated_at


def test_updated_at_does_not_move_on_status_changes_by_default(start) -> None:
    created, after_turn, after_title = _moves(start())
    assert after_turn == created
    assert after_title > after_turn


def test_updated_at_moves_on_status_changes_when_asked(start) -> None:
    created, after_turn, after_title = _moves(start(updated_at_moves="always"))
    assert after_turn > created
    assert after_title > after_turn


# -- 5 and 7. server-side defaults under strict validation ----------------------------------------


def test_environment_defaults_are_filled(client: anthropic.Anthropic) -> None:
    limited = client.beta.environments.create(
        name="l", config={"type": "cloud", "networking": {"type": "limited"}}
    )
    assert limited.config.type == "cloud"
    net = limited.config.networking
    assert net.type == "limited"
    assert (net.allowed_hosts, net.allow_mcp_servers, net.allow_package_managers) == (
        [],
        False,
        False,
    )
    nulls = client.beta.environments.create(
        name="n",
        config={"type": "cloud", "packages": {"type": "packages", "pip": None, "npm": ["x"]}},
    )
    assert nulls.config.type == "cloud"
    packages = nulls.config.packages
    assert (packages.pip, packages.npm, packages.apt) == ([], ["x"], [])
    with pytest.raises(anthropic.BadRequestError, match="allow_package_managers"):
        client.beta.environments.create(
            name="x",
            config={
                "type": "cloud",
                "networking": {"type": "limited"},
                "packages": {"type": "packages", "pip": ["requests"]},
            },
        )
    assert len(list(client.beta.environments.list())) == 2


def test_environment_update_keeps_what_it_omits(start, receiver: Receiver) -> None:
    served = hooked(start, receiver)
    client = served.client()
    env = client.beta.environments.create(
        name="e",
        metadata={"a": "1", "b": "2"},
        config={"type": "cloud", "networking": {"type": "limited", "allowed_hosts": ["x.io"]}},
    )
    same = client.beta.environments.update(env.id, name="e")
    assert same.updated_at == env.updated_at
    wait_for(lambda: rfc3339(served.emulator.clock.now()) > env.updated_at)
    changed = client.beta.environments.update(
        env.id,
        metadata={"a": None, "b": ""},
        config={"type": "cloud", "networking": {"type": "limited", "allow_mcp_servers": True}},
    )
    assert changed.metadata == {}
    assert changed.updated_at > env.updated_at
    assert changed.config.type == "cloud"
    net = changed.config.networking
    assert net.type == "limited"
    assert (net.allowed_hosts, net.allow_mcp_servers) == (["x.io"], True)
    wait_for(lambda: receiver.events("environment.updated"))
    wait_for(lambda: settled(served))
    assert len(receiver.events("environment.updated")) == 1  # the no-op sent nothing


def test_agent_defaults_are_filled(client: anthropic.Anthropic) -> None:
    agent = client.beta.agents.create(
        name="full",
        model={"id": "claude-opus-4-7", "effort": "max", "speed": "fast"},
        tools=[{"type": "mcp_toolset", "mcp_server_name": "gh"}],
        mcp_servers=[{"type": "url", "name": "gh", "url": "https://mcp.example/"}],
        skills=[{"type": "anthropic", "skill_id": "xlsx"}, {"type": "custom", "skill_id": "s_1"}],
    )
    assert agent.model.effort is not None
    assert agent.model.effort.type == "max"
    assert [s.version for s in agent.skills] == ["latest", "latest"]
    unknown_effort: Any = {"id": "m", "effort": "extreme"}
    with pytest.raises(anthropic.BadRequestError, match="effort"):
        client.beta.agents.create(name="x", model=unknown_effort)


def test_multiagent_is_resolved_on_agents_and_expanded_on_sessions(
    client: anthropic.Anthropic,
) -> None:
    w = world(client)
    helper = client.beta.agents.create(name="helper", model="claude-haiku-4-5")
    lead = client.beta.agents.create(
        name="lead",
        model="claude-sonnet-4-6",
        multiagent={
            "type": "coordinator",
            "agents": [
                helper.id,
                {"type": "self"},
                {"type": "advisor", "model": "claude-opus-4-7"},
            ],
        },
    )
    assert lead.multiagent is not None
    assert lead.multiagent.type == "coordinator"
    refs = [
        (a.type, getattr(a, "id", None), getattr(a, "version", None))
        for a in lead.multiagent.agents
    ]
    assert refs == [("agent", helper.id, 1), ("agent", lead.id, 1), ("advisor", None, None)]
    session = client.beta.sessions.create(agent=lead.id, environment_id=w.environment_id)
    snapshot = session.agent.multiagent
    assert snapshot is not None
    assert snapshot.type == "coordinator"
    expanded = snapshot.agents[0]
    assert expanded.type == "agent"
    assert expanded.name == "helper"
    modern = client.beta.agents.create(
        name="modern",
        model="claude-sonnet-4-6",
        multiagent={
            "type": "multiagent_20261001",
            "subagents": {"type": "enabled", "predefined_agents": [helper.id]},
        },
    )
    assert modern.multiagent is not None
    assert modern.multiagent.type == "multiagent_20261001"
    assert modern.multiagent.advisor.type == "disabled"
    assert modern.multiagent.workflows.type == "disabled"
    assert modern.multiagent.subagents.type == "enabled"
    assert modern.multiagent.subagents.inline_agents.type == "enabled"
    modern_session = client.beta.sessions.create(agent=modern.id, environment_id=w.environment_id)
    assert modern_session.agent.multiagent is not None
    with pytest.raises(anthropic.BadRequestError, match="not found"):
        client.beta.agents.create(
            name="x", model="m", multiagent={"type": "coordinator", "agents": ["agent_nope"]}
        )


def test_session_overrides_are_filled_like_agents(client: anthropic.Anthropic) -> None:
    w = world(client)
    session = client.beta.sessions.create(
        agent={
            "type": "agent_with_overrides",
            "id": w.agent_id,
            "model": {"id": "claude-opus-4-7", "effort": "low"},
            "skills": [{"type": "anthropic", "skill_id": "pdf"}],
        },
        environment_id=w.environment_id,
    )
    assert session.agent.model.effort is not None
    assert session.agent.model.effort.type == "low"
    assert session.agent.skills[0].version == "latest"
    replacement: Any = {
        "tools": [{"type": "custom", "name": "f", "input_schema": {"type": "object"}}]
    }
    updated = client.beta.sessions.update(session.id, agent=replacement)
    assert updated.agent.tools[0].type == "custom"


# -- 6. the second family --------------------------------------------------------------------------


def _family(start, receiver: Receiver, *, on: bool) -> Counter[str]:
    served = hooked(start, receiver, second_family=on)
    client = served.client()
    w = world(client)
    session = start_session(client, w, script="requires_action")
    wait_for(lambda: receiver.events("session.status_idled", session.id))
    rescheduled = start_session(client, w, script="reschedule")
    wait_for(lambda: receiver.events("session.status_idled", rescheduled.id))
    client.beta.sessions.archive(session.id)
    client.beta.sessions.delete(session.id)
    wait_for(lambda: receiver.events("session.deleted", session.id))
    wait_for(lambda: settled(served))
    counts = Counter(receiver.types(session.id))
    counts.update(t for t in receiver.types(rescheduled.id) if t == "session.pending")
    return counts


def test_second_family_adds_its_types_and_sends_shared_ones_once(start, receiver: Receiver) -> None:
    counts = _family(start, receiver, on=True)
    for shared in ("session.created", "session.archived", "session.deleted"):
        assert counts[shared] == 1, shared
    for own in ("session.running", "session.idled", "session.requires_action", "session.pending"):
        assert counts[own] >= 1, own
    assert counts["session.running"] == counts["session.status_run_started"]
    assert counts["session.idled"] == counts["session.status_idled"]


def test_without_the_switch_no_second_family(start, receiver: Receiver) -> None:
    counts = _family(start, receiver, on=False)
    assert counts["session.created"] == 1
    second = {"session.running", "session.idled", "session.requires_action", "session.pending"}
    assert not second & set(counts)
