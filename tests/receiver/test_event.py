"""Parsing a verified body into the SDK's event type; anything else is a BadEvent."""

import json
from datetime import UTC, datetime
from typing import Any

import pytest
from anthropic.types.beta.beta_webhook_session_status_idled_event_data import (
    BetaWebhookSessionStatusIdledEventData,
)

from receiver.errors import BadEvent
from receiver.event import KNOWN_EVENT_TYPES, parse_event, type_label
from store.inbox import session_id_for
from tests.receiver.conftest import event_body


def test_known_event_is_typed_by_the_sdk() -> None:
    parsed = parse_event(event_body("wevt_1"))
    assert isinstance(parsed.event.data, BetaWebhookSessionStatusIdledEventData)
    assert (parsed.event_id, parsed.event_type, parsed.resource_id) == (
        "wevt_1",
        "session.status_idled",
        "sesn_1",
    )
    assert parsed.created_at == datetime(2026, 11, 25, 11, 59, 58, tzinfo=UTC)


def test_unknown_type_still_parses_and_keeps_its_name() -> None:
    parsed = parse_event(event_body("wevt_2", "session.teleported", "sesn_9"))
    assert parsed.event_type == "session.teleported"
    assert type_label(parsed.event_type) == "other"


def test_known_type_missing_an_sdk_field_is_still_an_event() -> None:
    value = json.loads(event_body("wevt_3", "external_key.failed", "key_1"))
    del value["data"]["workspace_id"]  # organisation-level events carry none
    del value["data"]["organization_id"]
    parsed = parse_event(json.dumps(value).encode())
    assert (parsed.event_type, parsed.resource_id) == ("external_key.failed", "key_1")
    assert parsed.created_at == datetime(2026, 11, 25, 11, 59, 58, tzinfo=UTC)


def test_known_types_come_from_the_sdk_union() -> None:
    assert {"session.status_idled", "session.thread_idled", "deployment_run.failed"} <= (
        KNOWN_EVENT_TYPES
    )
    assert type_label("session.status_idled") == "session.status_idled"


def test_session_id_only_for_session_events() -> None:
    assert session_id_for("session.thread_idled", "sesn_1") == "sesn_1"
    assert session_id_for("agent.created", "agent_1") is None


def good() -> dict[str, Any]:
    value: dict[str, Any] = json.loads(event_body("wevt_1"))
    return value


def without(key: str, data: bool = False) -> bytes:
    value = good()
    (value["data"] if data else value).pop(key)
    return json.dumps(value).encode()


def with_(key: str, new: object, data: bool = False) -> bytes:
    value = good()
    (value["data"] if data else value)[key] = new
    return json.dumps(value).encode()


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"", "body_not_json"),
        (b"not json", "body_not_json"),
        (b"\xff\xfe{}", "body_not_utf8"),
        (b"[" * 100_000, "body_not_json"),  # deep nesting: RecursionError, not a crash
        (b"[1, 2]", "body_not_object"),
        (b'"event"', "body_not_object"),
        (without("type"), "not_an_event"),
        (with_("type", "message"), "not_an_event"),
        (without("id"), "bad_event_id"),
        (with_("id", ""), "bad_event_id"),
        (with_("id", 42), "bad_event_id"),
        (with_("id", "x" * 201), "bad_event_id"),
        (with_("id", "a\u0000b"), "bad_event_id"),
        (without("created_at"), "bad_created_at"),
        (with_("created_at", "yesterday"), "bad_created_at"),
        (with_("created_at", "9999-12-31T23:59:59-01:00"), "bad_created_at"),
        (with_("created_at", "0001-01-01T00:00:00+01:00"), "bad_created_at"),
        # Parses, but no float keeps it to the microsecond: the store refuses it, so must we.
        (with_("created_at", "9999-12-31T23:59:59.999999Z"), "bad_created_at"),
        (with_("created_at", "2300-01-01T00:00:00Z"), "bad_created_at"),
        (b'{"type": "event", "id": ' + b"1" * 5000 + b"}", "body_not_json"),
        (without("data"), "missing_data"),
        (with_("data", "sesn_1"), "missing_data"),
        (without("type", data=True), "bad_data_type"),
        (with_("type", None, data=True), "bad_data_type"),
        (without("id", data=True), "bad_data_id"),
    ],
)
def test_not_a_webhook_event(body: bytes, reason: str) -> None:
    with pytest.raises(BadEvent) as info:
        parse_event(body)
    assert info.value.reason == reason
