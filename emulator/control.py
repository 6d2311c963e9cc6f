"""The control API under `/_emulator/` (no auth, no beta): config, webhook log, billing,
stats, reset. Tests, the demo and the benchmarks in other processes drive the emulator here."""

from typing import Any

from pydantic import ValidationError
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from emulator import billing
from emulator.config import BillingModel
from emulator.core import Emulator
from emulator.errors import BadRequest


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


async def enable_endpoint(request: Request) -> Response:
    body = await request.json()
    url = body.get("url") if isinstance(body, dict) else None
    if not isinstance(url, str):
        raise BadRequest("url: required")
    _emu(request).sender.enable(url)
    return JSONResponse({"url": url, "enabled": True})


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
    Route("/_emulator/webhook-endpoints/enable", enable_endpoint, methods=["POST"]),
    Route("/_emulator/billing", get_billing, methods=["GET"]),
    Route("/_emulator/stats", get_stats, methods=["GET"]),
    Route("/_emulator/reset", reset, methods=["POST"]),
]
