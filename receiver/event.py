"""What was sent: a verified body parsed into the SDK's BetaWebhookEvent, or BadEvent.

The envelope fields idlehook relies on are checked here first, so "not a webhook event" never
becomes a delivery or a handler run (the intake keeps such a signed body raw, as unrecognised).
A known `data.type` is then validated against its own SDK model (picked by type, which is ~10x
cheaper than resolving the 51-way union); a `data.type` Anthropic adds tomorrow, or a known one
missing a field the SDK declares, is built leniently the way `beta.webhooks.unwrap` does
(`construct_type`), so it still parses and is stored.

The SDK model is built on first use of `ParsedEvent.event`, not on the webhook path: the intake
stores the checked envelope fields and the raw text, and model validation cost more per request
than the HMAC check while never changing whether a delivery is accepted.
"""

import functools
import json
import typing
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, cast

import pydantic

# The SDK's own lenient model construction, the one `beta.webhooks.unwrap` uses.
from anthropic._models import construct_type
from anthropic.types.beta import BetaWebhookEvent
from anthropic.types.beta.beta_webhook_event_data import BetaWebhookEventData

from receiver.errors import BadEvent
from store.ingest import ROW_EARLIEST, ROW_LATEST

MAX_ID_LENGTH = 200  # the store's column width


def _data_models() -> dict[str, type[pydantic.BaseModel]]:
    union = typing.get_args(BetaWebhookEventData)[0]
    models: dict[str, type[pydantic.BaseModel]] = {}
    for model in typing.get_args(union):
        for name in typing.get_args(model.model_fields["type"].annotation):
            models[name] = model
    return models


_DATA_MODELS = _data_models()
KNOWN_EVENT_TYPES = frozenset(_DATA_MODELS)
OTHER = "other"


def type_label(event_type: str) -> str:
    """A metric label: the SDK's known types, else one bucket, so cardinality stays bounded."""
    return event_type if event_type in KNOWN_EVENT_TYPES else OTHER


@dataclass  # not frozen: one per delivery, and a frozen init costs twice as much
class ParsedEvent:
    event_id: str
    event_type: str  # data.type
    resource_id: str  # data.id
    created_at: datetime
    text: str  # the body as received, decoded
    raw: dict[str, Any] = field(repr=False, compare=False)

    @functools.cached_property
    def event(self) -> BetaWebhookEvent:
        """The SDK's typed event, built (once) when someone asks for it."""
        return _build(self.raw, self.raw["data"], self.event_type, self.created_at)


def parse_event(body: bytes) -> ParsedEvent:
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise BadEvent("body_not_utf8") from None
    try:
        raw = json.loads(text)
    except (ValueError, RecursionError):
        raise BadEvent("body_not_json") from None
    if not isinstance(raw, dict):
        raise BadEvent("body_not_object")
    if raw.get("type") != "event":
        raise BadEvent("not_an_event")
    event_id = _require_id(raw.get("id"), "bad_event_id")
    created_at = _created_at(raw.get("created_at"))
    data = raw.get("data")
    if not isinstance(data, dict):
        raise BadEvent("missing_data")
    return ParsedEvent(
        event_id=event_id,
        event_type=_require_id(data.get("type"), "bad_data_type"),
        resource_id=_require_id(data.get("id"), "bad_data_id"),
        created_at=created_at,
        text=text,
        raw=raw,
    )


def _build(
    raw: dict[str, Any], data: dict[str, Any], event_type: str, created_at: datetime
) -> BetaWebhookEvent:
    model = _DATA_MODELS.get(event_type)
    if model is not None:
        try:
            envelope = {"type": "event", "id": raw["id"], "created_at": created_at}
            return BetaWebhookEvent.model_validate(envelope | {"data": model.model_validate(data)})
        except pydantic.ValidationError:
            pass  # a field the SDK calls required is missing: still an event, built leniently
    event = cast(BetaWebhookEvent, construct_type(type_=BetaWebhookEvent, value=raw))
    # construct_type keeps the timestamp as sent; use the one checked above.
    event.created_at = created_at
    return event


def _require_id(value: object, reason: str) -> str:
    if not isinstance(value, str) or not value or len(value) > MAX_ID_LENGTH:
        raise BadEvent(reason)
    if not value.isprintable():  # NUL and friends: PostgreSQL text refuses them
        raise BadEvent(reason)
    return value


def _created_at(value: object) -> datetime:
    if not isinstance(value, str):
        raise BadEvent("bad_created_at")
    try:
        parsed = datetime.fromisoformat(value)
        moment = parsed.astimezone(UTC) if parsed.tzinfo else parsed.replace(tzinfo=UTC)
    except (ValueError, OverflowError):  # year 9999 at -01:00 overflows on conversion
        raise BadEvent("bad_created_at") from None
    # Anthropic stamps an event when it happens; an instant the store cannot keep exactly (the
    # year 9999, say) is no event of theirs, and would fail every delivery batched with it.
    if not ROW_EARLIEST <= moment < ROW_LATEST:
        raise BadEvent("bad_created_at")
    return moment
