"""Billing as the API documents it: runtime only while running (the default model), the
Session's `usage.active_seconds` equal to the ledger's running time, and the counterfactual of a
turn cut short (interrupt, delete, archive): what it would still have run and spent."""

import time
from datetime import datetime
from typing import Any

import anthropic
import pytest

from emulator.config import EmulatorConfig
from emulator.runner import REQUEST_USD
from idlehook.cli import build_parser
from idlehook.cli.emulator import config_from_args
from tests.emulator.conftest import Served, idle_events, start_session, world
from tests.support.servers import wait_for

RATE = 0.08
RUNAWAY_SECONDS = 7200.0  # a two-hour turn
RUNAWAY_STEPS = 5
SPEED = 3600.0  # an emulated hour per real second: the runaway turn lasts two real seconds
# Each step's timer may fire late by a loop tick (a few emulated seconds at this speed); the
# schedule is re-anchored after each step, so lateness adds to the turn's scheduled end.
SLACK = 600.0


def runaway(client: anthropic.Anthropic) -> Any:
    w = world(client)
    return start_session(
        client,
        w,
        script=f"long:{RUNAWAY_STEPS}",
        metadata={"emulator_run_seconds": str(int(RUNAWAY_SECONDS))},
    )


def row(report: dict[str, Any], session_id: str) -> dict[str, Any]:
    found: list[dict[str, Any]] = [r for r in report["sessions"] if r["session_id"] == session_id]
    assert len(found) == 1
    return found[0]


def messages(client: anthropic.Anthropic, session_id: str) -> int:
    return len(list(client.beta.sessions.events.list(session_id, types=["agent.message"])))


def active(client: anthropic.Anthropic, session_id: str) -> float:
    value = client.beta.sessions.retrieve(session_id).usage.active_seconds
    assert value is not None
    return value


def test_default_billing_model_is_running(served: Served) -> None:
    assert EmulatorConfig().billing_model == "running"
    args = build_parser().parse_args(["emulator", "--webhook-secret", "whsec_abc"])
    assert config_from_args(args)[0].billing_model == "running"
    exists = build_parser().parse_args(["emulator", "--billing-model", "exists"])
    assert config_from_args(exists)[0].billing_model == "exists"
    report = served.control("GET", "billing")
    assert report["model"] == "running"
    assert report["rate_usd_per_container_hour"] == RATE


def test_active_seconds_is_the_ledgers_running_time(start) -> None:
    served: Served = start(run_seconds=30.0)
    client = served.client()
    w = world(client)
    session = start_session(client, w, script="tools")
    wait_for(lambda: idle_events(client, session.id))
    client.beta.sessions.events.send(
        session.id,
        events=[{"type": "user.message", "content": [{"type": "text", "text": "#script:long:2"}]}],
    )
    wait_for(lambda: len(idle_events(client, session.id)) == 2)
    fetched = client.beta.sessions.retrieve(session.id)
    report = served.control("GET", "billing")
    billed = row(report, session.id)
    assert fetched.usage.active_seconds == round(billed["running_seconds"], 3)
    assert fetched.stats.active_seconds == fetched.usage.active_seconds
    assert billed["running_seconds"] >= 2 * 30.0  # two turns of 30 s each
    # Idle costs nothing under `running`: the bill equals the running time.
    assert billed["container_seconds"] == billed["running_seconds"]
    assert billed["exists_seconds"] > billed["running_seconds"]
    # Tokens sit beside runtime: "tools" says two things, "long:2" two more.
    assert billed["token_usd"] == pytest.approx(4 * REQUEST_USD)
    assert report["total_token_usd"] == pytest.approx(4 * REQUEST_USD)
    assert fetched.usage.list_cost is not None
    assert fetched.usage.list_cost.amount == str(round(4 * REQUEST_USD * 100))
    # Nothing was cut short.
    assert billed["avoided_running_seconds"] == 0
    assert billed["avoided_token_usd"] == 0
    assert billed["would_have_run_until"] is None
    assert report["total_avoided_runtime_usd"] == 0


def test_runaway_interrupt_stops_the_clock_and_records_what_it_avoided(start) -> None:
    served: Served = start(speed=SPEED)
    client = served.client()
    session = runaway(client)
    # Let it run past its first step (20 emulated minutes in), then cut it short.
    wait_for(lambda: messages(client, session.id) >= 1)
    client.beta.sessions.events.send(session.id, events=[{"type": "user.interrupt"}])
    idle = wait_for(lambda: idle_events(client, session.id))
    assert idle[-1].stop_reason.type == "end_turn"
    report = served.control("GET", "billing")
    said = messages(client, session.id)
    assert 1 <= said < RUNAWAY_STEPS

    # The running clock stopped at the interrupt: an emulated half hour later, not a second more.
    stopped = active(client, session.id)
    time.sleep(0.5)
    assert active(client, session.id) == stopped
    billed = row(report, session.id)
    later = row(served.control("GET", "billing"), session.id)
    assert later["running_seconds"] == billed["running_seconds"]
    assert later["container_seconds"] == billed["container_seconds"]
    assert stopped == round(billed["running_seconds"], 3)
    assert 1200.0 <= billed["running_seconds"] < RUNAWAY_SECONDS

    # What the cut avoided: the rest of the two hours, and the steps it never took.
    avoided = billed["avoided_running_seconds"]
    ran_plus_avoided = billed["running_seconds"] + avoided
    assert RUNAWAY_SECONDS - 1e-3 <= ran_plus_avoided <= RUNAWAY_SECONDS + SLACK
    assert billed["avoided_token_usd"] == pytest.approx((RUNAWAY_STEPS - said) * REQUEST_USD)
    assert billed["token_usd"] == pytest.approx(said * REQUEST_USD)
    assert billed["avoided_runtime_usd"] == pytest.approx(avoided / 3600 * RATE, abs=1e-8)
    assert report["total_avoided_running_seconds"] == pytest.approx(avoided)
    assert report["total_avoided_runtime_usd"] == pytest.approx(avoided / 3600 * RATE, abs=1e-8)
    assert report["total_avoided_token_usd"] == pytest.approx(billed["avoided_token_usd"])

    # The turn was scheduled to end two hours (and any timer lateness) after it started.
    until = datetime.fromisoformat(billed["would_have_run_until"])
    started = served.emulator.ledger.meters[session.id].created
    scheduled = served.emulator.clock.emulated_wall(started + RUNAWAY_SECONDS)
    assert -1e-3 <= (until - scheduled).total_seconds() <= SLACK
    assert until > datetime.fromisoformat(report["emulated_now"])

    # Under `exists` the container is held until the delete anyway: the cut saves no runtime.
    exists = served.control("GET", "billing?model=exists")
    assert exists["model"] == "exists"
    assert exists["total_avoided_running_seconds"] == pytest.approx(avoided)
    assert exists["total_avoided_runtime_usd"] == 0
    assert row(exists, session.id)["avoided_runtime_usd"] == 0
    assert exists["total_avoided_token_usd"] == pytest.approx(billed["avoided_token_usd"])


def test_delete_while_running_records_the_cut_and_stops_billing(start) -> None:
    served: Served = start(speed=SPEED)
    client = served.client()
    session = runaway(client)
    wait_for(lambda: active(client, session.id) > 600)
    client.beta.sessions.delete(session.id)
    first = row(served.control("GET", "billing"), session.id)
    time.sleep(0.3)
    later = row(served.control("GET", "billing"), session.id)
    assert first["deleted"] is True
    assert later["running_seconds"] == first["running_seconds"]
    assert later["container_seconds"] == first["container_seconds"]
    ran_plus_avoided = first["running_seconds"] + first["avoided_running_seconds"]
    assert RUNAWAY_SECONDS - 1e-3 <= ran_plus_avoided <= RUNAWAY_SECONDS + SLACK
    assert first["avoided_token_usd"] > 0
    assert first["would_have_run_until"] is not None


def test_archive_while_running_records_the_cut(start) -> None:
    served: Served = start(speed=SPEED)
    client = served.client()
    session = runaway(client)
    wait_for(lambda: active(client, session.id) > 600)
    archived = client.beta.sessions.archive(session.id)
    assert archived.status == "terminated"
    stopped = active(client, session.id)
    time.sleep(0.3)
    assert active(client, session.id) == stopped
    billed = row(served.control("GET", "billing"), session.id)
    assert billed["avoided_running_seconds"] > RUNAWAY_SECONDS / 2
    assert billed["avoided_token_usd"] == pytest.approx(
        (RUNAWAY_STEPS - messages(client, session.id)) * REQUEST_USD
    )


def test_interrupt_while_waiting_avoids_nothing(
    client: anthropic.Anthropic, served: Served
) -> None:
    # Idle on requires_action: not running, so stopping it saves no runtime.
    w = world(client)
    session = start_session(client, w, script="requires_action")
    wait_for(lambda: idle_events(client, session.id))
    client.beta.sessions.events.send(session.id, events=[{"type": "user.interrupt"}])
    idle = wait_for(
        lambda: len(idle_events(client, session.id)) == 2 and idle_events(client, session.id)
    )
    assert idle[-1].stop_reason.type == "end_turn"
    billed = row(served.control("GET", "billing"), session.id)
    assert billed["avoided_running_seconds"] == 0
    assert billed["avoided_token_usd"] == 0
    assert billed["would_have_run_until"] is None
