"""Webhooks as a receiver sees them: thin, signed, retried like Anthropic's, and bent by the
fault knobs."""

import itertools
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

import anthropic
import httpx

from tests.emulator.conftest import Receiver, Served, new_secret, start_session, world
from tests.support.servers import wait_for


def hooked(start, receiver: Receiver, **config) -> Served:
    config.setdefault("webhook_secrets", [receiver.secret])
    served: Served = start(webhook_urls=[receiver.url], **config)
    return served


def attempts(served: Served, event_id: str | None = None) -> list[dict[str, Any]]:
    log = served.control("GET", "webhook-log")["attempts"]
    return [a for a in log if event_id is None or a["event_id"] == event_id]


def test_every_transition_is_a_verified_thin_event(start, receiver: Receiver) -> None:
    served = hooked(start, receiver)
    client = served.client()
    w = world(client)
    session = start_session(client, w, script="requires_action")
    wait_for(lambda: receiver.events("session.status_idled", session.id))
    client.beta.sessions.delete(session.id)
    wait_for(lambda: receiver.events("session.deleted", session.id))
    got = receiver.events(session_id=session.id)
    assert all(r.verified for r in got)
    assert set(receiver.types(session.id)) == {
        "session.created",
        "session.status_run_started",
        "session.status_idled",
        "session.deleted",
    }
    event = got[0].event
    assert event["type"] == "event"
    assert event["id"].startswith("wevt_")
    assert got[0].headers["webhook-id"] == event["id"]
    assert set(event["data"]) == {"id", "type", "organization_id", "workspace_id"}
    # The SDK's own verifier accepts what we send.
    sdk = anthropic.Anthropic(api_key="k", base_url=served.url, webhook_key=receiver.secret)
    parsed = sdk.beta.webhooks.unwrap(got[0].body, headers=got[0].headers)
    assert parsed.data.id == session.id


def test_archive_fires_status_terminated(start, receiver: Receiver) -> None:
    served = hooked(start, receiver)
    client = served.client()
    w = world(client)
    session = client.beta.sessions.create(agent=w.agent_id, environment_id=w.environment_id)
    client.beta.sessions.archive(session.id)
    wait_for(lambda: receiver.events("session.archived", session.id))
    wait_for(lambda: receiver.events("session.status_terminated", session.id))


def test_outcome_scripts_idle_or_terminate(start, receiver: Receiver) -> None:
    served = hooked(start, receiver)
    client = served.client()
    w = world(client)
    outcomes = {}
    for script in (
        "end_turn",
        "requires_action",
        "custom_tools:1",
        "retries_exhausted",
        "budget_reached",
    ):
        budget = {"type": "limit", "max_list_cost": {"amount": "100", "currency": "USD"}}
        outcomes[script] = start_session(client, w, script=script, budget=budget).id
    terminated = start_session(client, w, script="terminate").id
    for session_id in outcomes.values():
        wait_for(lambda sid=session_id: receiver.events("session.status_idled", sid))
    wait_for(lambda: receiver.events("session.status_terminated", terminated))
    assert not receiver.events("session.status_idled", terminated)
    wait_for(lambda: receiver.events("session.budget_reached", outcomes["budget_reached"]))


def test_second_family_behind_a_switch(start, receiver: Receiver) -> None:
    served = hooked(start, receiver, second_family=True)
    client = served.client()
    w = world(client)
    session = start_session(client, w, script="requires_action")
    wait_for(lambda: receiver.events("session.requires_action", session.id))
    wait_for(lambda: receiver.events("session.idled", session.id))
    assert receiver.events("session.running", session.id)
    assert receiver.events("session.status_idled", session.id)


def test_retry_twice_then_delivered_same_id_restamped(start, receiver: Receiver) -> None:
    receiver.script = [500, 500]
    ticks = itertools.count()

    def wall() -> datetime:  # every reading is 2 s later: re-stamping becomes visible
        return datetime.now(UTC) + timedelta(seconds=2 * next(ticks))

    served = hooked(start, receiver, speed=1000, wall=wall)
    client = served.client()
    client.beta.environments.create(name="e")  # one event: environment.created
    wait_for(lambda: len(receiver.received) == 3)
    ids = {r.headers["webhook-id"] for r in receiver.received}
    assert len(ids) == 1
    log = attempts(served)
    assert [a["attempt"] for a in log] == [1, 2, 3]
    assert [a["outcome"] for a in log] == ["failed", "failed", "delivered"]
    assert all(r.verified for r in receiver.received)
    stamps = [int(r.headers["webhook-timestamp"]) for r in receiver.received]
    assert stamps == sorted(stamps)
    assert len(set(stamps)) == 3


def test_three_failures_drop_the_event(start, receiver: Receiver) -> None:
    receiver.default = 500
    served = hooked(start, receiver, speed=1000)
    served.client().beta.environments.create(name="e")
    wait_for(lambda: len(attempts(served)) == 3)
    wait_for(lambda: served.control("GET", "stats")["webhooks"]["pending"] == 0)
    assert len(receiver.received) == 3
    assert [a["outcome"] for a in attempts(served)] == ["failed"] * 3


def test_rotation_signs_with_every_secret(start, receiver: Receiver) -> None:
    old = new_secret()
    served = start(webhook_urls=[receiver.url], webhook_secrets=[old, receiver.secret])
    served.client().beta.environments.create(name="e")
    wait_for(lambda: receiver.received)
    (got,) = receiver.received
    assert got.verified  # the receiver knows only the new secret
    assert len(got.headers["webhook-signature"].split(" ")) == 2


def test_redirect_disables_the_endpoint(start, receiver: Receiver) -> None:
    receiver.default = 302
    served = hooked(start, receiver)
    client = served.client()
    client.beta.environments.create(name="e")
    wait_for(lambda: attempts(served))
    endpoint = wait_for(lambda: served.control("GET", "webhook-log")["endpoints"])[0]
    assert endpoint["enabled"] is False
    assert endpoint["disabled_reason"] == "redirect"
    client.beta.environments.create(name="e2")
    wait_for(lambda: len(attempts(served)) == 2)
    assert attempts(served)[-1]["outcome"] == "endpoint_disabled"
    assert len(receiver.received) == 1


def test_sustained_failure_disables(start, receiver: Receiver) -> None:
    receiver.default = 503
    served = hooked(
        start, receiver, speed=1000, webhook_max_attempts=1, disable_after_failed_deliveries=3
    )
    client = served.client()
    for i in range(3):
        client.beta.environments.create(name=f"e{i}")
        wait_for(lambda n=i + 1: len(receiver.received) == n)
    endpoint = wait_for(
        lambda: [e for e in served.control("GET", "webhook-log")["endpoints"] if not e["enabled"]]
    )[0]
    assert endpoint["disabled_reason"] == "sustained_failure"


def test_drop_all_and_runtime_toggle(start, receiver: Receiver) -> None:
    served = hooked(start, receiver, faults={"drop_all": True})
    client = served.client()
    client.beta.environments.create(name="dropped")
    wait_for(lambda: attempts(served))
    assert attempts(served)[0]["outcome"] == "dropped"
    served.control("PUT", "config", json={"faults": {"drop_all": False}})
    client.beta.environments.create(name="kept")
    wait_for(lambda: receiver.received)
    assert len(receiver.received) == 1


def test_drop_probability(start, receiver: Receiver) -> None:
    served = hooked(start, receiver, faults={"drop": 1.0})
    served.client().beta.environments.create(name="e")
    wait_for(lambda: attempts(served))
    assert receiver.received == []


def test_duplicate_delivers_twice(start, receiver: Receiver) -> None:
    served = hooked(start, receiver, faults={"duplicate": 1.0})
    served.client().beta.environments.create(name="e")
    wait_for(lambda: len(receiver.received) == 2)
    assert receiver.received[0].headers["webhook-id"] == receiver.received[1].headers["webhook-id"]


def test_burst_sends_copies(start, receiver: Receiver) -> None:
    served = hooked(start, receiver, faults={"burst": 4})
    served.client().beta.environments.create(name="e")
    wait_for(lambda: len(receiver.received) == 4)
    assert len({r.headers["webhook-id"] for r in receiver.received}) == 1


def test_reorder_shuffles_within_the_window(start, receiver: Receiver) -> None:
    served = hooked(start, receiver, faults={"reorder_window": 12})
    served.emulator.rng.seed(7)
    client = served.client()
    for i in range(12):
        client.beta.environments.create(name=f"e{i}")
    wait_for(lambda: len(receiver.received) == 12)
    emitted = [e["id"] for e in served.control("GET", "webhook-log")["emitted"]]
    arrived = [r.headers["webhook-id"] for r in receiver.received]
    assert sorted(arrived) == sorted(emitted)
    assert arrived != emitted


def test_reorder_releases_a_partial_window(start, receiver: Receiver) -> None:
    served = hooked(start, receiver, faults={"reorder_window": 50})
    served.client().beta.environments.create(name="e")
    wait_for(lambda: receiver.received)  # released after reorder_max_hold_seconds


def test_delay_holds_delivery(start, receiver: Receiver) -> None:
    served = hooked(start, receiver, speed=10, faults={"delay_seconds": 10.0})
    served.client().beta.environments.create(name="e")
    wait_for(lambda: served.control("GET", "stats")["webhooks"]["pending"] == 1)
    assert receiver.received == []  # 1 s real delay still running
    wait_for(lambda: receiver.received)


def test_webhook_log_records_each_attempt(start, receiver: Receiver) -> None:
    served = hooked(start, receiver)
    served.client().beta.environments.create(name="e")
    (entry,) = wait_for(lambda: attempts(served))
    assert entry["type"] == "environment.created"
    assert entry["url"] == receiver.url
    assert entry["status"] == 200
    assert entry["outcome"] == "delivered"
    assert Counter(a["outcome"] for a in attempts(served)) == {"delivered": 1}


def test_control_config_roundtrip(start) -> None:
    served = start()
    config = served.control("GET", "config")
    assert "api_key" not in config
    bad = httpx.put(f"{served.url}/_emulator/config", json={"speed": -1})
    assert bad.status_code == 400
    assert bad.json()["error"]["type"] == "invalid_request_error"
    updated = served.control("PUT", "config", json={"rate_limits": {"read_per_minute": 5}})
    assert updated["rate_limits"] == {
        "enabled": True,
        "algorithm": "token_bucket",
        "create_per_minute": 300,
        "read_per_minute": 5,
    }


def test_reset_and_reenable(start, receiver: Receiver) -> None:
    receiver.default = 302
    served = hooked(start, receiver)
    client = served.client()
    client.beta.environments.create(name="e")
    wait_for(lambda: not served.control("GET", "webhook-log")["endpoints"][0]["enabled"])
    receiver.default = 200
    served.control("POST", "webhook-endpoints/enable", json={"url": receiver.url})
    client.beta.environments.create(name="e2")
    wait_for(lambda: len(receiver.received) == 2)
    served.control("POST", "reset")
    assert served.control("GET", "stats")["total_requests"] == 0
    assert client.beta.environments.list().data == []
    served.control("PUT", "config", json={"speed": 1000.0})
    assert served.emulator.clock.speed == 1000.0


def test_reschedule_fires_status_rescheduled(start, receiver: Receiver) -> None:
    served = hooked(start, receiver)
    client = served.client()
    session = start_session(client, world(client), script="reschedule")
    wait_for(lambda: receiver.events("session.status_idled", session.id))
    assert receiver.events("session.status_rescheduled", session.id)
    assert len(receiver.events("session.status_run_started", session.id)) == 2
