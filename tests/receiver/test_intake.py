"""POST /webhooks/anthropic over real HTTP, into a real database, on SQLite and PostgreSQL."""

import asyncio
import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import httpx
import pytest
from prometheus_client import REGISTRY
from structlog.testing import capture_logs

from tests.receiver.conftest import (
    KEY_A,
    KEY_B,
    NOW,
    WEBHOOK,
    Receiver,
    event_body,
    sign,
    signed_headers,
)


def metric(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def post(receiver: Receiver, body: bytes, headers: dict[str, str]) -> httpx.Response:
    return httpx.post(receiver.url + WEBHOOK, content=body, headers=headers)


def test_delivery_is_stored_with_its_routing_run_before_the_ack(receiver: Receiver) -> None:
    body = event_body("wevt_1", "session.status_idled", "sesn_42")
    before = metric(
        "idlehook_webhook_deliveries_total", event_type="session.status_idled", outcome="stored"
    )
    response = post(receiver, body, signed_headers(body, "wevt_1"))
    assert response.status_code == 204
    assert response.headers["idlehook-outcome"] == "stored"
    assert response.content == b""
    # No polling: the 2xx itself promises the commit.
    [stored] = receiver.deliveries()
    assert stored.event_id == "wevt_1"
    assert stored.event_type == "session.status_idled"
    assert stored.resource_id == stored.session_id == "sesn_42"
    assert stored.source == "webhook"
    assert stored.secret_index == 0
    assert stored.body == body.decode()  # the raw text, byte for byte
    assert set(stored.headers) == {"webhook-id", "webhook-timestamp", "user-agent", "content-type"}
    assert stored.received_at == NOW  # the injected clock
    assert stored.event_created_at == NOW - timedelta(seconds=2)
    [run] = receiver.runs()
    assert (run.delivery_id, run.handler, run.position) == (stored.id, "_route", 0)
    assert (run.lane, run.state) == ("sesn_42", "pending")
    after = metric(
        "idlehook_webhook_deliveries_total", event_type="session.status_idled", outcome="stored"
    )
    assert after == before + 1


def test_duplicate_is_acknowledged_and_recorded_not_processed(receiver: Receiver) -> None:
    body = event_body("wevt_dup")
    label = {"event_type": "session.status_idled", "outcome": "duplicate"}
    before = metric("idlehook_webhook_deliveries_total", **label)
    assert (
        post(receiver, body, signed_headers(body, "wevt_dup")).headers["idlehook-outcome"]
        == "stored"
    )
    # A retry: same id, re-stamped timestamp, signed with the other key mid-rotation.
    retry = signed_headers(body, "wevt_dup", secret=KEY_B, at=NOW - timedelta(seconds=30))
    response = post(receiver, body, retry)
    assert response.status_code == 204
    assert response.headers["idlehook-outcome"] == "duplicate"
    [stored] = receiver.rows("SELECT duplicates, last_duplicate_at, secret_index FROM deliveries")
    assert stored["duplicates"] == 1
    assert stored["last_duplicate_at"] is not None
    assert stored["secret_index"] == 0  # the first copy is what was stored
    assert receiver.count("handler_runs") == 1
    assert metric("idlehook_webhook_deliveries_total", **label) == before + 1


def test_unknown_event_type_is_stored_and_acknowledged(receiver: Receiver) -> None:
    body = event_body("wevt_new", "session.teleported", "sesn_7")
    before = metric("idlehook_webhook_deliveries_total", event_type="other", outcome="stored")
    assert post(receiver, body, signed_headers(body, "wevt_new")).status_code == 204
    [stored] = receiver.rows("SELECT event_type, session_id FROM deliveries")
    assert (stored["event_type"], stored["session_id"]) == ("session.teleported", "sesn_7")
    assert receiver.count("handler_runs", "lane = :lane", lane="sesn_7") == 1
    after = metric("idlehook_webhook_deliveries_total", event_type="other", outcome="stored")
    assert after == before + 1


def test_non_session_event_runs_in_its_own_lane(receiver: Receiver) -> None:
    body = event_body("wevt_agent", "agent.created", "agent_1")
    assert post(receiver, body, signed_headers(body, "wevt_agent")).status_code == 204
    [stored] = receiver.rows("SELECT session_id FROM deliveries")
    assert stored["session_id"] is None
    assert receiver.count("handler_runs", "lane = :lane", lane="delivery:wevt_agent") == 1


def test_rotation_either_key_verifies_and_the_metric_says_which(receiver: Receiver) -> None:
    before = [metric("idlehook_webhook_signing_key_matches_total", key_index=i) for i in "01"]
    for n, secret in enumerate([KEY_A, KEY_B, KEY_B]):
        body = event_body(f"wevt_rot_{n}")
        assert post(receiver, body, signed_headers(body, f"wevt_rot_{n}", secret=secret)).is_success
    after = [metric("idlehook_webhook_signing_key_matches_total", key_index=i) for i in "01"]
    assert (after[0] - before[0], after[1] - before[1]) == (1, 2)
    rows = receiver.rows("SELECT event_id, secret_index FROM deliveries ORDER BY event_id")
    assert [r["secret_index"] for r in rows] == [0, 1, 1]


async def test_concurrent_burst_each_ack_is_stored_exactly_once(receiver: Receiver) -> None:
    ids = [f"wevt_burst_{i % 150}" for i in range(200)]  # 50 of them are duplicates
    batches_before = metric("idlehook_inbox_batch_size_count")
    singles_before = metric("idlehook_inbox_batch_size_bucket", le="1.0")
    limits = httpx.Limits(max_connections=200)
    async with httpx.AsyncClient(base_url=receiver.url, limits=limits, timeout=60) as client:

        async def one(event_id: str) -> httpx.Response:
            body = event_body(event_id, resource_id=f"sesn_{event_id}")
            return await client.post(WEBHOOK, content=body, headers=signed_headers(body, event_id))

        responses = await asyncio.gather(*(one(i) for i in ids))
    assert {r.status_code for r in responses} == {204}
    statuses = [r.headers["idlehook-outcome"] for r in responses]
    assert statuses.count("stored") == 150
    assert statuses.count("duplicate") == 50
    stored = receiver.rows("SELECT event_id, duplicates FROM deliveries")
    assert sorted(r["event_id"] for r in stored) == sorted(set(ids))
    assert sum(r["duplicates"] for r in stored) == 50
    assert receiver.count("handler_runs") == 150
    batches = metric("idlehook_inbox_batch_size_count") - batches_before
    singles = metric("idlehook_inbox_batch_size_bucket", le="1.0") - singles_before
    assert batches < 200, "group commit put several deliveries in one transaction"
    assert singles < batches


BAD_BODY = event_body("wevt_bad")


def signed(body: bytes, msg_id: str = "wevt_bad", **kwargs: Any) -> dict[str, str]:
    return signed_headers(body, msg_id, **kwargs)


def without(header: str) -> dict[str, str]:
    headers = signed(BAD_BODY)
    del headers[header]
    return headers


def replace(**changes: str) -> dict[str, str]:
    headers = signed(BAD_BODY)
    headers.update({k.replace("_", "-"): v for k, v in changes.items()})
    return headers


def chunks(data: bytes, size: int = 4096) -> Iterator[bytes]:
    for i in range(0, len(data), size):
        yield data[i : i + size]


def as_event(payload: Any) -> bytes:
    return json.dumps(payload).encode()


NOT_AN_EVENT = as_event({"type": "event", "id": "wevt_bad", "created_at": "2026-11-25T00:00:00Z"})
WRONG_TYPE = as_event(json.loads(BAD_BODY) | {"type": "message"})
HUGE = b'{"pad": "' + b"x" * (300 * 1024) + b'"}'
NOT_UTF8 = b'{"type": "event", "id": "\xff\xfe"}'

# Signed by Anthropic, yet no envelope idlehook knows: kept raw and answered 2xx, never refused.
ODD_BODIES = {
    "non-JSON": b"hello",
    "empty body": b"",
    "non-UTF-8": NOT_UTF8,
    "JSON array": b"[1,2]",
    "JSON without data": NOT_AN_EVENT,
    "JSON of wrong type": WRONG_TYPE,
    "a Console test event": as_event({"type": "test", "message": "Hello from the Console"}),
}

NO_COMMA = "v1" + sign(KEY_A, "wevt_bad", int(NOW.timestamp()), BAD_BODY)[3:]
OTHER_KEY = "whsec_" + "Q" * 44
STALE, FUTURE = NOW - timedelta(minutes=6), NOW + timedelta(minutes=6)


@dataclass(frozen=True)
class Bad:
    name: str
    body: Any
    headers: dict[str, str]
    status: int
    reason: str
    method: str = "POST"
    path: str = WEBHOOK


BAD_INPUTS = [
    Bad("no webhook-id", BAD_BODY, without("webhook-id"), 401, "missing_signature_headers"),
    Bad("no timestamp", BAD_BODY, without("webhook-timestamp"), 401, "missing_signature_headers"),
    Bad("no signature", BAD_BODY, without("webhook-signature"), 401, "missing_signature_headers"),
    Bad("no headers at all", BAD_BODY, {}, 401, "missing_signature_headers"),
    Bad(
        "signature garbage",
        BAD_BODY,
        replace(webhook_signature="garbage"),
        401,
        "malformed_signature",
    ),
    Bad(
        "signature without comma",
        BAD_BODY,
        replace(webhook_signature=NO_COMMA),
        401,
        "malformed_signature",
    ),
    Bad(
        "timestamp not a number",
        BAD_BODY,
        replace(webhook_timestamp="now"),
        401,
        "malformed_timestamp",
    ),
    Bad("wrong secret", BAD_BODY, signed(BAD_BODY, secret=OTHER_KEY), 401, "no_matching_signature"),
    Bad("body changed", BAD_BODY + b" ", signed(BAD_BODY), 401, "no_matching_signature"),
    Bad("id changed", BAD_BODY, replace(webhook_id="wevt_other"), 401, "no_matching_signature"),
    Bad("stale timestamp", BAD_BODY, signed(BAD_BODY, at=STALE), 401, "stale_timestamp"),
    Bad("future timestamp", BAD_BODY, signed(BAD_BODY, at=FUTURE), 401, "future_timestamp"),
    Bad("unsigned empty body", b"", {}, 401, "missing_signature_headers"),
    # The odd bodies a signed delivery may carry (test_signed_odd_bodies_are_kept_raw_...),
    # each unsigned or wrongly signed: refused, never kept.
    *(
        Bad(f"{name}, unsigned", body, {}, 401, "missing_signature_headers")
        for name, body in ODD_BODIES.items()
    ),
    *(
        Bad(
            f"{name}, wrong secret",
            body,
            signed(body, secret=OTHER_KEY),
            401,
            "no_matching_signature",
        )
        for name, body in ODD_BODIES.items()
    ),
    Bad("oversized, content-length", HUGE, signed(HUGE), 413, "body_too_large"),
    Bad("oversized, chunked", "chunked", signed(HUGE), 413, "body_too_large"),
    Bad(
        "huge header", BAD_BODY, signed(BAD_BODY) | {"x-pad": "a" * 60_000}, 431, "header_too_large"
    ),
    Bad(
        "huge signature",
        BAD_BODY,
        replace(webhook_signature="v1," + "A" * 60_000),
        431,
        "header_too_large",
    ),
    Bad("GET webhook", None, {}, 405, "method_not_allowed", method="GET"),
    Bad("PUT webhook", BAD_BODY, signed(BAD_BODY), 405, "method_not_allowed", method="PUT"),
    Bad("unknown path", BAD_BODY, signed(BAD_BODY), 404, "not_found", path="/webhooks/other"),
    Bad("POST on healthz", b"", {}, 405, "method_not_allowed", path="/healthz"),
]


def test_bad_input_is_refused_with_a_4xx_and_never_stored(receiver: Receiver) -> None:
    failures: list[str] = []
    with httpx.Client(base_url=receiver.url, timeout=30) as client, capture_logs() as logs:
        for bad in BAD_INPUTS:
            content = chunks(HUGE) if bad.body == "chunked" else bad.body
            response = client.request(bad.method, bad.path, content=content, headers=bad.headers)
            got = (response.status_code, response.json())
            if got != (bad.status, {"error": bad.reason}):
                failures.append(f"{bad.name}: expected {bad.status} {bad.reason}, got {got}")
    assert not failures, "\n".join(failures)
    assert receiver.count("deliveries") == 0
    assert receiver.count("handler_runs") == 0
    assert receiver.count("unrecognised_deliveries") == 0
    rejections = [e for e in logs if e["event"] == "webhook.rejected"]
    webhook_posts = [b for b in BAD_INPUTS if b.path == WEBHOOK and b.method == "POST"]
    assert len(rejections) == len(webhook_posts)  # one line per rejection
    text = repr(logs)
    assert "whsec_" not in text
    assert "v1," not in text  # no signature
    assert '"data"' not in text  # no body


def test_rejections_are_counted_by_reason(receiver: Receiver) -> None:
    sig = {"reason": "stale_timestamp"}
    rej = {"reason": "stale_timestamp", "status": "401"}
    not_json = {"reason": "body_not_json", "status": "400"}
    kept = {"event_type": "unrecognised", "outcome": "unrecognised"}
    before = metric("idlehook_webhook_signature_failures_total", **sig)
    before_rej = metric("idlehook_webhook_rejections_total", **rej)
    before_not_json = metric("idlehook_webhook_rejections_total", **not_json)
    before_kept = metric("idlehook_webhook_deliveries_total", **kept)
    post(receiver, BAD_BODY, signed(BAD_BODY, at=NOW - timedelta(minutes=10)))
    post(receiver, b"nope", signed(b"nope", "msg_nope"))
    assert metric("idlehook_webhook_signature_failures_total", **sig) == before + 1
    assert metric("idlehook_webhook_rejections_total", **rej) == before_rej + 1
    # Signed non-JSON is kept, not refused.
    assert metric("idlehook_webhook_rejections_total", **not_json) == before_not_json
    assert metric("idlehook_webhook_deliveries_total", **kept) == before_kept + 1


def test_signed_odd_bodies_are_kept_raw_answered_2xx_and_never_routed(
    receiver: Receiver,
) -> None:
    with httpx.Client(base_url=receiver.url, timeout=30) as client, capture_logs() as logs:
        for n, body in enumerate(ODD_BODIES.values()):
            response = client.post(WEBHOOK, content=body, headers=signed(body, f"msg_odd_{n}"))
            assert (response.status_code, response.headers["idlehook-outcome"]) == (
                204,
                "unrecognised",
            ), body
        # Anthropic retries with the same webhook-id (re-stamped): kept once, counted.
        body = ODD_BODIES["a Console test event"]
        retry = signed(body, "msg_odd_6", secret=KEY_B, at=NOW - timedelta(seconds=20))
        response = client.post(WEBHOOK, content=body, headers=retry)
        assert (response.status_code, response.headers["idlehook-outcome"]) == (204, "duplicate")
    kept = receiver.rows(
        "SELECT message_id, reason, body, headers, secret_index, duplicates"
        " FROM unrecognised_deliveries ORDER BY message_id"
    )
    assert [r["message_id"] for r in kept] == [f"msg_odd_{n}" for n in range(len(ODD_BODIES))]
    assert [bytes(r["body"]) for r in kept] == list(ODD_BODIES.values())  # byte for byte
    assert [r["reason"] for r in kept] == [
        "body_not_json",
        "body_not_json",
        "body_not_utf8",
        "body_not_object",
        "missing_data",
        "not_an_event",
        "not_an_event",
    ]
    assert [r["duplicates"] for r in kept] == [0] * 6 + [1]
    assert all(r["secret_index"] == 0 for r in kept)  # the first copy is what was kept
    # Never a delivery, never work for a handler.
    assert receiver.count("deliveries") == 0
    assert receiver.count("handler_runs") == 0
    # A line each, naming the message and why; never the body.
    lines = [e for e in logs if e["event"] == "webhook.unrecognised"]
    assert len(lines) == len(ODD_BODIES) + 1
    assert "Hello from the Console" not in repr(logs)


@pytest.mark.parametrize("path", ["/healthz", "/metrics"])
def test_ops_endpoints_do_not_touch_the_webhook_path(receiver: Receiver, path: str) -> None:
    assert httpx.get(receiver.url + path).status_code == 200
