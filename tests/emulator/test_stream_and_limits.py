"""The SSE event stream (live only, session.deleted closes it) and rate limiting."""

import threading
from typing import Any

import anthropic
import httpx
import pytest

from tests.emulator.conftest import Served, user_message, world
from tests.support.servers import wait_for


def test_stream_receives_live_events_then_deleted(served: Served) -> None:
    client = served.client()
    w = world(client)
    session = client.beta.sessions.create(agent=w.agent_id, environment_id=w.environment_id)
    client.beta.sessions.events.send(session.id, events=[user_message("before")])
    wait_for(lambda: client.beta.sessions.retrieve(session.id).status == "idle")
    seen: list[Any] = []

    def consume() -> None:
        with client.beta.sessions.events.stream(session.id) as stream:
            seen.extend(stream)

    thread = threading.Thread(target=consume, daemon=True)
    thread.start()
    wait_for(lambda: served.emulator.store.sessions[session.id].subscribers)
    client.beta.sessions.events.send(session.id, events=[user_message("live")])
    wait_for(lambda: any(e.type == "session.status_idle" for e in seen))
    client.beta.sessions.delete(session.id)
    thread.join(timeout=10)
    assert not thread.is_alive()
    kinds = [e.type for e in seen]
    assert kinds[0] == "user.message"  # no replay of the first turn
    assert seen[0].content[0].text == "live"
    assert "agent.message" in kinds
    assert kinds[-1] == "session.deleted"


def test_stream_frames_and_deltas_on_the_wire(start) -> None:
    served = start(sse_heartbeat_seconds=0.05)
    client = served.client()
    w = world(client)
    session = client.beta.sessions.create(agent=w.agent_id, environment_id=w.environment_id)
    lines: list[str] = []
    headers = {"x-api-key": "k", "anthropic-beta": "managed-agents-2026-04-01"}

    def consume() -> None:
        url = f"{served.url}/v1/sessions/{session.id}/events/stream"
        params = {"event_deltas[]": "agent.message"}
        with httpx.stream("GET", url, params=params, headers=headers, timeout=10) as response:
            lines.extend(response.iter_lines())

    thread = threading.Thread(target=consume, daemon=True)
    thread.start()
    wait_for(lambda: served.emulator.store.sessions[session.id].subscribers)
    wait_for(lambda: ": heartbeat" in lines)
    client.beta.sessions.events.send(session.id, events=[user_message()])
    wait_for(lambda: "event: session.status_idle" in lines)
    client.beta.sessions.delete(session.id)
    thread.join(timeout=10)
    frames = [line for line in lines if line.startswith("event: ")]
    assert "event: event_start" in frames
    assert "event: event_delta" in frames
    assert frames[-1] == "event: session.deleted"
    data = [line for line in lines if line.startswith("data: ")]
    assert len(data) == len(frames)  # every frame has its event line


def test_stream_rejects_unknown_deltas(served: Served) -> None:
    client = served.client()
    w = world(client)
    session = client.beta.sessions.create(agent=w.agent_id, environment_id=w.environment_id)
    response = httpx.get(
        f"{served.url}/v1/sessions/{session.id}/events/stream",
        params={"event_deltas[]": "span.model_request_start"},
        headers={"x-api-key": "k", "anthropic-beta": "managed-agents-2026-04-01"},
    )
    assert response.status_code == 400


def test_read_limit_gives_429_with_retry_after(start) -> None:
    served = start(speed=1, rate_limits={"read_per_minute": 3})
    client = served.client()
    for _ in range(3):
        client.beta.sessions.list()
    with pytest.raises(anthropic.RateLimitError) as caught:
        client.beta.sessions.list()
    retry_after = float(caught.value.response.headers["retry-after"])
    assert 0 < retry_after <= 60
    body: Any = caught.value.body
    assert body["error"]["type"] == "rate_limit_error"
    stats = served.control("GET", "stats")
    assert stats["total_rate_limited"] == 1
    assert stats["requests"]["GET /v1/sessions"] == 4


def test_create_limit_is_separate_and_window_scales_with_speed(start) -> None:
    served = start(speed=30, rate_limits={"create_per_minute": 2})  # a minute is 2 s
    client = served.client()
    w = world(client)  # one agent create
    client.beta.sessions.create(agent=w.agent_id, environment_id=w.environment_id)
    with pytest.raises(anthropic.RateLimitError):
        client.beta.sessions.create(agent=w.agent_id, environment_id=w.environment_id)
    client.beta.sessions.list()  # reads are not limited by the create budget
    # The SDK honours retry-after and gets through once the (short) window slides.
    patient = served.client(max_retries=5)
    patient.beta.sessions.create(agent=w.agent_id, environment_id=w.environment_id)


def test_injected_api_faults(start) -> None:
    served = start(api_faults={"error_5xx": 1.0})
    client = served.client()
    with pytest.raises(anthropic.InternalServerError):
        client.beta.sessions.list()
    served.control("PUT", "config", json={"api_faults": {"error_5xx": 0.0, "error_429": 1.0}})
    with pytest.raises(anthropic.RateLimitError):
        client.beta.sessions.list()
    served.control("PUT", "config", json={"api_faults": {"error_429": 0.0}})
    assert client.beta.sessions.list().data == []
    assert served.control("GET", "stats")["faults_injected"] == {"500": 1, "429": 1}
