"""The organization webhooks API (beta `webhooks-2026-10-07`), as SDK 2.16 calls it:
`/v1/organizations/webhooks` create and list, `/{id}` retrieve, update and delete,
`/{id}/regenerate_signing_secret`.

An endpoint's API fields live in the store; its delivery state lives in the sender, which
delivers the organization event types it subscribed to, signed with its own secret. So
`state` and `disabled_reason` are the sender's: an auto-disable (a 3xx: `redirect`; about 20
failed deliveries in a row: `sustained_failure`; a non-public address, when the emulator is
told to check: `invalid_address`) shows here, and `update(state="enabled")`
re-enables it with a clean count. A caller's own disable shows an empty `disabled_reason`.
The list pages by `after_id`/`before_id` with `has_more`/`first_id`/`last_id`. The API
wants HTTPS URLs; the emulator also takes `http://`, so a local receiver can be one.

With `org_webhooks_include_workspace`, the workspace endpoints (the config's `webhook_urls`,
which get the session events) are listed too, under a stable id `whep_ws…` derived from the
URL, with no `enabled_events`; they can be re-enabled or disabled through `update(state=…)`,
and nothing else (400): the Console manages them.
"""

import base64
import hashlib
import secrets
from typing import Any

from emulator import validation
from emulator.clock import rfc3339
from emulator.core import Emulator
from emulator.errors import BadRequest, NotFound
from emulator.ids import new_id
from emulator.query import Query
from emulator.sender import ORGANIZATION_EVENT_TYPES, EndpointState

BETA = "webhooks-2026-10-07"
MAX_ENDPOINTS = 32
DEFAULT_LIMIT = 20
MAX_LIMIT = 100


def new_signing_secret() -> str:
    return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()


def workspace_endpoint_id(url: str) -> str:
    return "whep_ws" + hashlib.sha256(url.encode()).hexdigest()[:20]


def _workspace_records(emu: Emulator) -> dict[str, dict[str, Any]]:
    if not emu.config.org_webhooks_include_workspace:
        return {}
    out = {}
    for url in emu.config.webhook_urls:
        created = emu.sender.endpoint(url).created_at or rfc3339(emu.clock.now())
        endpoint_id = workspace_endpoint_id(url)
        out[endpoint_id] = {
            "id": endpoint_id,
            "url": url,
            "name": "",
            "description": "workspace endpoint (Console)",
            "enabled_events": [],
            "created_at": created,
            "updated_at": created,
            "_key": url,
        }
    return out


def _records(emu: Emulator) -> dict[str, dict[str, Any]]:
    return {**_workspace_records(emu), **emu.store.org_webhooks}


def _record(emu: Emulator, endpoint_id: str) -> dict[str, Any]:
    record = _records(emu).get(endpoint_id)
    if record is None:
        raise NotFound(f"webhook endpoint {endpoint_id} not found")
    return record


def _state(emu: Emulator, record: dict[str, Any]) -> EndpointState:
    return emu.sender.endpoint(record.get("_key", record["id"]))


def public(emu: Emulator, record: dict[str, Any]) -> dict[str, Any]:
    state = _state(emu, record)
    reason = state.disabled_reason
    return {
        **{k: v for k, v in record.items() if k != "_key"},
        "state": "enabled" if state.enabled else "disabled",
        # Why Anthropic disabled it: empty while enabled, or when a caller disabled it.
        "disabled_reason": "" if state.enabled or reason in (None, "caller") else reason,
    }


def _events(body: dict[str, Any], *, required: bool) -> list[str] | None:
    value = body.get("enabled_events")
    if value is None and not required:
        return None
    if not isinstance(value, list) or (required and not value):
        raise BadRequest("enabled_events: required, a non-empty array of event types")
    for i, item in enumerate(value):
        if item not in ORGANIZATION_EVENT_TYPES:
            raise BadRequest(
                f"enabled_events[{i}]: {item!r} is not an organization event type; "
                f"one of {', '.join(sorted(ORGANIZATION_EVENT_TYPES))}"
            )
    return list(dict.fromkeys(value)) or None  # [] on update leaves the set unchanged


def _url(body: dict[str, Any]) -> str:
    url = validation.required_str(body, "url", max_len=2048)
    if not url.startswith(("https://", "http://")):
        raise BadRequest("url: expected an HTTPS URL")
    return url


def _text(body: dict[str, Any], key: str) -> str:
    return validation.optional_str(body, key) or ""


def create(emu: Emulator, body: Any) -> dict[str, Any]:
    body = validation.as_object(body)
    if len(emu.store.org_webhooks) >= MAX_ENDPOINTS:
        raise BadRequest(f"an organization can have at most {MAX_ENDPOINTS} webhook endpoints")
    events = _events(body, required=True)
    assert events is not None
    url = _url(body)
    now = rfc3339(emu.clock.now())
    endpoint_id = new_id("whep_")
    record: dict[str, Any] = {
        "id": endpoint_id,
        "url": url,
        "name": _text(body, "name"),
        "description": _text(body, "description"),
        "enabled_events": events,
        "created_at": now,
        "updated_at": now,
    }
    secret = new_signing_secret()
    emu.store.org_webhooks[endpoint_id] = record
    emu.sender.add_organization_endpoint(endpoint_id, url, secret, events)
    return {**public(emu, record), "signing_secret": secret}


def retrieve(emu: Emulator, endpoint_id: str) -> dict[str, Any]:
    return public(emu, _record(emu, endpoint_id))


def update(emu: Emulator, endpoint_id: str, body: Any) -> dict[str, Any]:
    body = validation.as_object(body)
    record = _record(emu, endpoint_id)
    state = body.get("state")
    if state is not None and state not in ("enabled", "disabled"):
        raise BadRequest("state: expected enabled or disabled")
    events = _events(body, required=False)
    url = _url(body) if "url" in body else None
    endpoint = _state(emu, record)
    if endpoint.kind == "workspace":
        if set(body) - {"state"}:
            raise BadRequest("a workspace endpoint is managed in the Console; only state here")
        if state is not None and (state == "enabled") != endpoint.enabled:
            if state == "enabled":
                emu.sender.enable(endpoint.key)
            else:
                emu.sender.disable(endpoint.key)
        return public(emu, record)
    changed = False
    for key in ("name", "description"):
        if key in body and _text(body, key) != record[key]:
            record[key] = _text(body, key)
            changed = True
    if events is not None and events != record["enabled_events"]:
        record["enabled_events"] = events
        endpoint.events = frozenset(events)
        changed = True
    if url is not None and url != record["url"]:
        record["url"] = endpoint.url = url
        changed = True
    if state is not None and (state == "enabled") != endpoint.enabled:
        if state == "enabled":
            emu.sender.enable(endpoint_id)
        else:
            emu.sender.disable(endpoint_id)
        changed = True
    if changed:
        record["updated_at"] = rfc3339(emu.clock.now())
    return public(emu, record)


def _own(emu: Emulator, endpoint_id: str) -> dict[str, Any]:
    record = _record(emu, endpoint_id)
    if "_key" in record:
        raise BadRequest("a workspace endpoint is managed in the Console")
    return record


def delete(emu: Emulator, endpoint_id: str) -> dict[str, Any]:
    _own(emu, endpoint_id)
    del emu.store.org_webhooks[endpoint_id]
    emu.sender.remove(endpoint_id)
    return {"id": endpoint_id, "type": "webhook_endpoint_deleted"}


def regenerate_signing_secret(emu: Emulator, endpoint_id: str) -> dict[str, Any]:
    record = _own(emu, endpoint_id)
    secret = new_signing_secret()
    _state(emu, record).secret = secret  # the old one stops working at once
    record["updated_at"] = rfc3339(emu.clock.now())
    return {"signing_secret": secret}


def list_endpoints(emu: Emulator, q: Query) -> dict[str, Any]:
    """One page, SyncPage-shaped. `after_id`: the page right after that endpoint; `before_id`:
    the first `limit` endpoints before it in list order (as the SDK documents it)."""
    order = q.order("desc")
    raw_limit = q.get_int("limit", DEFAULT_LIMIT, minimum=0, maximum=MAX_LIMIT)
    limit = raw_limit or DEFAULT_LIMIT  # 0 means the default
    # By created_at; a stable sort keeps creation order among equal instants.
    rows = sorted(_records(emu).values(), key=lambda r: str(r["created_at"]))
    if order == "desc":
        rows.reverse()
    ids = [r["id"] for r in rows]
    after_id, before_id = q.get("after_id"), q.get("before_id")
    if after_id and before_id:
        raise BadRequest("after_id and before_id: send at most one")
    for name, cursor in (("after_id", after_id), ("before_id", before_id)):
        if cursor and cursor not in ids:
            raise BadRequest(f"{name}: no webhook endpoint {cursor}")
    if after_id:
        candidates = rows[ids.index(after_id) + 1 :]
    elif before_id:
        candidates = rows[: ids.index(before_id)]
    else:
        candidates = rows
    page = candidates[:limit]
    data = [public(emu, r) for r in page]
    return {
        "data": data,
        "has_more": len(candidates) > limit,
        "first_id": data[0]["id"] if data else None,
        "last_id": data[-1]["id"] if data else None,
    }
