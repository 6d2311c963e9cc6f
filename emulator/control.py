"""The control API under `/_emulator/` (no auth, no beta): config, webhook log, webhook
endpoints (state, manual enable/disable), Console test events, arbitrary events, billing,
stats, reset. Tests, the demo and the benchmarks in other processes drive the emulator here.

Webhook routes (an endpoint is named by `url`, a workspace endpoint from `webhook_urls`, or
`id`, an organization endpoint from the organization webhooks API; unknown ones are a 404):
- `GET  /_emulator/webhook-endpoints`: every endpoint's state: `enabled`, `state`,
  `disabled_reason` (redirect | sustained_failure | invalid_address | caller | null),
  `consecutive_failed_deliveries`, `delivered`, `failed`.
- `POST /_emulator/webhook-endpoints/enable` `{url | id}`: re-enable (the Console's button);
  the failure count restarts, nothing missed is replayed.
- `POST /_emulator/webhook-endpoints/disable` `{url | id}`: disable by hand (`caller`).
- `POST /_emulator/webhooks/test` `{url | id | endpoints?, type?, data_id?, body?}`: a
  Console test event, signed and retried like the rest, to the named endpoints (default:
  all), whatever they subscribed to. By default `data.type` is `webhook.test`, which the
  SDK's union does not know; `type` picks another, `body` replaces the whole payload.
- `POST /_emulator/webhooks/emit` `{type, id, data?}`: emit an event as the API would
  (organization types such as `external_key.failed` go to subscribed organization endpoints).
"""

from typing import Any

from pydantic import ValidationError
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from emulator import billing
from emulator.config import BillingModel
from emulator.core import Emulator
from emulator.errors import BadRequest, NotFound
from emulator.sender import TEST_EVENT_TYPE, EndpointState


def _emu(request: Request) -> Emulator:
    emu: Emulator = request.app.state.emulator
    return emu


def billing_report(emu: Emulator, model: str | None = None) -> dict[str, Any]:
    """The ledger priced under the configured billing model, or `model` (exists|running):
    runtime and token list cost per session and in total, and what cut-short turns avoided.
    Instants are on the emulated clock."""
    chosen: BillingModel = emu.config.billing_model
    if model == "exists":
        chosen = "exists"
    elif model == "running":
        chosen = "running"
    elif model is not None:
        raise BadRequest("model: exists or running")
    return billing.report(
        emu.ledger,
        chosen,
        emu.config.container_hour_usd,
        emu.clock.elapsed(),
        wall_origin=emu.clock.emulated_wall(0.0),
    )


def stats(emu: Emulator) -> dict[str, Any]:
    return {
        "requests": dict(emu.requests),
        "total_requests": sum(emu.requests.values()),
        "rate_limited": dict(emu.rate_limited),
        "total_rate_limited": sum(emu.rate_limited.values()),
        "creates": dict(emu.creates),
        "faults_injected": dict(emu.faults_injected),
        "sessions": {
            "total": len(emu.store.sessions),
            "live": sum(1 for s in emu.store.sessions.values() if not s.deleted),
            "by_status": _by_status(emu),
        },
        "webhooks": {"emitted": len(emu.sender.emitted), "pending": emu.sender.pending()},
    }


def _by_status(emu: Emulator) -> dict[str, int]:
    out: dict[str, int] = {}
    for record in emu.store.sessions.values():
        if not record.deleted:
            out[record.status] = out.get(record.status, 0) + 1
    return out


async def get_config(request: Request) -> Response:
    return JSONResponse(_emu(request).config.public())


async def put_config(request: Request) -> Response:
    try:
        patch = await request.json()
    except ValueError:
        raise BadRequest("body: not JSON") from None
    if not isinstance(patch, dict):
        raise BadRequest("body: expected a JSON object")
    try:
        config = _emu(request).apply_config(patch)
    except ValidationError as exc:
        raise BadRequest(f"config: {exc.errors(include_url=False)}") from None
    return JSONResponse(config.public())


async def webhook_log(request: Request) -> Response:
    emu = _emu(request)
    return JSONResponse(
        {
            "attempts": emu.sender.log_entries(),
            "endpoints": emu.sender.endpoint_states(),
            "emitted": emu.sender.emitted,
        }
    )


async def _object(request: Request) -> dict[str, Any]:
    try:
        body = await request.json()
    except ValueError:
        raise BadRequest("body: not JSON") from None
    if not isinstance(body, dict):
        raise BadRequest("body: expected a JSON object")
    return body


def _key(body: dict[str, Any]) -> str:
    key = body.get("url", body.get("id"))
    if not isinstance(key, str):
        raise BadRequest("url or id: required")
    return key


def _endpoint(emu: Emulator, key: str) -> EndpointState:
    try:
        return emu.sender.endpoint(key)
    except KeyError:
        raise NotFound(f"no webhook endpoint {key}") from None


async def list_endpoints(request: Request) -> Response:
    return JSONResponse({"endpoints": _emu(request).sender.endpoint_states()})


async def enable_endpoint(request: Request) -> Response:
    emu = _emu(request)
    key = _key(await _object(request))
    _endpoint(emu, key)
    return JSONResponse(emu.sender.enable(key).public())


async def disable_endpoint(request: Request) -> Response:
    emu = _emu(request)
    key = _key(await _object(request))
    _endpoint(emu, key)
    return JSONResponse(emu.sender.disable(key).public())


async def send_test_event(request: Request) -> Response:
    emu = _emu(request)
    body = await _object(request)
    keys = body.get("endpoints")
    if keys is None and ("url" in body or "id" in body):
        keys = [_key(body)]
    if keys is not None and (
        not isinstance(keys, list) or not all(isinstance(k, str) for k in keys)
    ):
        raise BadRequest("endpoints: expected an array of URLs or ids")
    for key in keys or []:
        _endpoint(emu, key)
    data_type = body.get("type", TEST_EVENT_TYPE)
    data_id = body.get("data_id")
    payload = body.get("body")
    if not isinstance(data_type, str) or not data_type:
        raise BadRequest("type: expected a non-empty string")
    if data_id is not None and not isinstance(data_id, str):
        raise BadRequest("data_id: expected a string")
    if payload is not None and not isinstance(payload, dict):
        raise BadRequest("body: expected a JSON object")
    event = emu.sender.send_test(keys or None, data_type, data_id, payload)
    return JSONResponse({"event": event})


async def emit_event(request: Request) -> Response:
    emu = _emu(request)
    body = await _object(request)
    data_type, data_id, extra = body.get("type"), body.get("id"), body.get("data") or {}
    if not isinstance(data_type, str) or not data_type:
        raise BadRequest("type: required, a string")
    if not isinstance(data_id, str) or not data_id:
        raise BadRequest("id: required, a string")
    if not isinstance(extra, dict):
        raise BadRequest("data: expected a JSON object of extra data fields")
    return JSONResponse({"event": emu.sender.emit(data_type, data_id, **extra)})


async def get_billing(request: Request) -> Response:
    return JSONResponse(billing_report(_emu(request), request.query_params.get("model")))


async def get_stats(request: Request) -> Response:
    return JSONResponse(stats(_emu(request)))


async def reset(request: Request) -> Response:
    _emu(request).reset()
    return JSONResponse({"reset": True})


routes = [
    Route("/_emulator/config", get_config, methods=["GET"]),
    Route("/_emulator/config", put_config, methods=["PUT", "PATCH"]),
    Route("/_emulator/webhook-log", webhook_log, methods=["GET"]),
    Route("/_emulator/webhook-endpoints", list_endpoints, methods=["GET"]),
    Route("/_emulator/webhook-endpoints/enable", enable_endpoint, methods=["POST"]),
    Route("/_emulator/webhook-endpoints/disable", disable_endpoint, methods=["POST"]),
    Route("/_emulator/webhooks/test", send_test_event, methods=["POST"]),
    Route("/_emulator/webhooks/emit", emit_event, methods=["POST"]),
    Route("/_emulator/billing", get_billing, methods=["GET"]),
    Route("/_emulator/stats", get_stats, methods=["GET"]),
    Route("/_emulator/reset", reset, methods=["POST"]),
]
