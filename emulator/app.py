"""create_emulator(config) -> Starlette: the Managed Agents API subset idlehook uses, served
so the official SDK works unchanged against it, plus the `/_emulator/` control API.

Every `/v1` route goes through `_api`: request id, auth (Bearer or x-api-key), the beta header
(404 without it, as the real API), rate limits, injected faults, per-route counters, one log
line per request."""

import json
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Any

import structlog
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from emulator import catalog, control, deployments, org_webhooks, sessions, sse
from emulator.config import EmulatorConfig
from emulator.core import Emulator
from emulator.errors import (
    APIError,
    AuthenticationFailed,
    BadRequest,
    NotFound,
    RateLimited,
    handle_api_error,
    handle_method_not_allowed,
    handle_not_found,
)
from emulator.faults import api_fault
from emulator.ids import request_id
from emulator.pagination import Page, paginate
from emulator.query import Query, in_range, parse_time
from emulator.ratelimit import RateClass

log = structlog.get_logger(__name__)

BETA = "managed-agents-2026-04-01"
Result = dict[str, Any] | Page | Response
Handler = Callable[[Request, Emulator], Awaitable[Result]]


def _authenticate(request: Request, emu: Emulator) -> None:
    auth = request.headers.get("authorization", "")
    key = auth[7:].strip() if auth.lower().startswith("bearer ") else None
    key = key or request.headers.get("x-api-key")
    if not key:
        raise AuthenticationFailed("Missing API key: send x-api-key or Authorization: Bearer")
    if emu.config.api_key is not None and key != emu.config.api_key:
        raise AuthenticationFailed("Invalid API key")


def _has_beta(request: Request, beta: str) -> bool:
    values = request.headers.getlist("anthropic-beta")
    return any(part.strip() == beta for value in values for part in value.split(","))


def _api(
    template: str,
    method: str,
    handler: Handler,
    kind: RateClass | None,
    *,
    beta: str | None = BETA,
    paged: bool = False,
    bidirectional: bool = False,
) -> Route:
    key = f"{method} {template}"

    async def endpoint(request: Request) -> Response:
        emu: Emulator = request.app.state.emulator
        rid = request_id()
        request.state.request_id = rid
        emu.requests[key] += 1
        status = 500
        try:
            _authenticate(request, emu)
            if beta is not None and not _has_beta(request, beta):
                # The real API hides beta endpoints from requests without the header.
                raise NotFound(f"Not found: {method} {request.url.path}")
            limits = emu.config.rate_limits
            if kind is not None and limits.enabled:
                per_minute = (
                    limits.create_per_minute if kind == "create" else limits.read_per_minute
                )
                wait = emu.limiter.acquire(kind, per_minute, limits.algorithm)
                if wait is not None:
                    emu.rate_limited[key] += 1
                    real = emu.clock.real_seconds(wait)
                    raise RateLimited(
                        f"Rate limit exceeded: {per_minute} {kind} requests per minute",
                        headers={
                            "retry-after": f"{max(real, 0.001):.3f}",
                            "retry-after-ms": str(max(1, round(real * 1000))),
                        },
                    )
            fault = api_fault(emu.config.api_faults, emu.rng)
            if fault is not None:
                emu.faults_injected[f"{fault.status_code}"] += 1
                raise fault
            result = await handler(request, emu)
            if paged and emu.config.api_faults.slow_page_seconds > 0:
                await emu.clock.sleep(emu.config.api_faults.slow_page_seconds)
            if isinstance(result, Response):
                response = result
            else:
                body = (
                    result.body(bidirectional=bidirectional) if isinstance(result, Page) else result
                )
                response = JSONResponse(body, headers={"request-id": rid})
            status = response.status_code
            return response
        except APIError as exc:
            status = exc.status_code
            raise
        finally:
            log.info("api.request", method=method, route=template, status=status, request_id=rid)

    return Route(template, endpoint, methods=[method])


async def _json(request: Request) -> Any:
    raw = await request.body()
    if not raw:
        return {}
    try:
        return json.loads(raw)
    except ValueError:
        raise BadRequest("request body is not valid JSON") from None


def _q(request: Request) -> Query:
    return Query(request.query_params.multi_items())


def _p(request: Request, name: str) -> str:
    value: str = request.path_params[name]
    return value


# -- handlers -------------------------------------------------------------------------------


async def create_agent(request: Request, emu: Emulator) -> Result:
    return catalog.create_agent(emu, await _json(request))


async def retrieve_agent(request: Request, emu: Emulator) -> Result:
    version = _q(request).get("version")
    if version is not None and not version.isdigit():
        raise BadRequest("version: expected an integer")
    return catalog.retrieve_agent(emu, _p(request, "id"), int(version) if version else None)


async def update_agent(request: Request, emu: Emulator) -> Result:
    return catalog.update_agent(emu, _p(request, "id"), await _json(request))


async def archive_agent(request: Request, emu: Emulator) -> Result:
    return catalog.archive_agent(emu, _p(request, "id"))


async def list_agents(request: Request, emu: Emulator) -> Result:
    return catalog.list_agents(emu, _q(request))


async def list_agent_versions(request: Request, emu: Emulator) -> Result:
    return catalog.list_agent_versions(emu, _p(request, "id"), _q(request))


async def create_environment(request: Request, emu: Emulator) -> Result:
    return catalog.create_environment(emu, await _json(request))


async def retrieve_environment(request: Request, emu: Emulator) -> Result:
    return emu.store.environment(_p(request, "id"))


async def update_environment(request: Request, emu: Emulator) -> Result:
    return catalog.update_environment(emu, _p(request, "id"), await _json(request))


async def list_environments(request: Request, emu: Emulator) -> Result:
    return catalog.list_environments(emu, _q(request))


async def archive_environment(request: Request, emu: Emulator) -> Result:
    return catalog.archive_environment(emu, _p(request, "id"))


async def delete_environment(request: Request, emu: Emulator) -> Result:
    return catalog.delete_environment(emu, _p(request, "id"))


async def create_session(request: Request, emu: Emulator) -> Result:
    record = sessions.create(emu, await _json(request))
    return sessions.public(emu, record)


async def retrieve_session(request: Request, emu: Emulator) -> Result:
    return sessions.retrieve(emu, _p(request, "id"))


async def list_sessions(request: Request, emu: Emulator) -> Result:
    return sessions.list_sessions(emu, _q(request))


async def update_session(request: Request, emu: Emulator) -> Result:
    return sessions.update(emu, _p(request, "id"), await _json(request))


async def delete_session(request: Request, emu: Emulator) -> Result:
    return sessions.delete(emu, _p(request, "id"))


async def archive_session(request: Request, emu: Emulator) -> Result:
    return sessions.archive(emu, _p(request, "id"))


async def list_events(request: Request, emu: Emulator) -> Result:
    record = emu.store.session(_p(request, "id"))
    q = _q(request)
    order = q.order("asc")
    types = q.get_list("types")
    bounds = q.time_range("created_at")
    rows = [
        e
        for e in record.events
        if (not types or e["type"] in types)
        and (not bounds or (e.get("processed_at") and in_range(_ts(e["processed_at"]), bounds)))
    ]
    if order == "desc":
        rows.reverse()  # events are stored in processing order
    return paginate(
        rows, limit=q.get_int("limit", 1000, maximum=1000), page=q.get("page"), order=order
    )


def _ts(value: str) -> datetime:
    return parse_time("processed_at", value)


async def send_events(request: Request, emu: Emulator) -> Result:
    return {"data": sessions.send_events(emu, _p(request, "id"), await _json(request))}


async def stream_events(request: Request, emu: Emulator) -> Result:
    record = emu.store.session(_p(request, "id"))
    return sse.open_stream(
        emu, record, _q(request).get_list("event_deltas"), request.state.request_id
    )


async def list_files(request: Request, emu: Emulator) -> Result:
    return catalog.list_files(emu, _q(request))


async def create_deployment(request: Request, emu: Emulator) -> Result:
    return deployments.create(emu, await _json(request))


async def retrieve_deployment(request: Request, emu: Emulator) -> Result:
    return deployments.public(emu, emu.store.deployment(_p(request, "id")))


async def update_deployment(request: Request, emu: Emulator) -> Result:
    return deployments.update(emu, _p(request, "id"), await _json(request))


async def list_deployments(request: Request, emu: Emulator) -> Result:
    return deployments.list_deployments(emu, _q(request))


async def run_deployment(request: Request, emu: Emulator) -> Result:
    return deployments.run(emu, _p(request, "id"))


async def pause_deployment(request: Request, emu: Emulator) -> Result:
    return deployments.set_paused(emu, _p(request, "id"), True)


async def unpause_deployment(request: Request, emu: Emulator) -> Result:
    return deployments.set_paused(emu, _p(request, "id"), False)


async def archive_deployment(request: Request, emu: Emulator) -> Result:
    return deployments.archive(emu, _p(request, "id"))


async def list_runs(request: Request, emu: Emulator) -> Result:
    return deployments.list_runs(emu, _q(request))


async def retrieve_run(request: Request, emu: Emulator) -> Result:
    return emu.store.run(_p(request, "id"))


async def create_org_webhook(request: Request, emu: Emulator) -> Result:
    return org_webhooks.create(emu, await _json(request))


async def list_org_webhooks(request: Request, emu: Emulator) -> Result:
    return org_webhooks.list_endpoints(emu, _q(request))


async def retrieve_org_webhook(request: Request, emu: Emulator) -> Result:
    return org_webhooks.retrieve(emu, _p(request, "id"))


async def update_org_webhook(request: Request, emu: Emulator) -> Result:
    return org_webhooks.update(emu, _p(request, "id"), await _json(request))


async def delete_org_webhook(request: Request, emu: Emulator) -> Result:
    return org_webhooks.delete(emu, _p(request, "id"))


async def regenerate_org_webhook_secret(request: Request, emu: Emulator) -> Result:
    return org_webhooks.regenerate_signing_secret(emu, _p(request, "id"))


def api_routes() -> list[Route]:
    hooks = org_webhooks.BETA
    return [
        _api("/v1/agents", "POST", create_agent, "create"),
        _api("/v1/agents", "GET", list_agents, "read", paged=True),
        _api("/v1/agents/{id}", "GET", retrieve_agent, "read"),
        _api("/v1/agents/{id}", "POST", update_agent, "read"),
        _api("/v1/agents/{id}/archive", "POST", archive_agent, "read"),
        _api("/v1/agents/{id}/versions", "GET", list_agent_versions, "read", paged=True),
        _api("/v1/environments", "POST", create_environment, None),
        _api("/v1/environments", "GET", list_environments, None, paged=True),
        _api("/v1/environments/{id}", "GET", retrieve_environment, None),
        _api("/v1/environments/{id}", "POST", update_environment, None),
        _api("/v1/environments/{id}", "DELETE", delete_environment, None),
        _api("/v1/environments/{id}/archive", "POST", archive_environment, None),
        _api("/v1/sessions", "POST", create_session, "create"),
        _api("/v1/sessions", "GET", list_sessions, "read", paged=True, bidirectional=True),
        _api("/v1/sessions/{id}", "GET", retrieve_session, "read"),
        _api("/v1/sessions/{id}", "POST", update_session, "read"),
        _api("/v1/sessions/{id}", "DELETE", delete_session, "read"),
        _api("/v1/sessions/{id}/archive", "POST", archive_session, "read"),
        _api("/v1/sessions/{id}/events", "GET", list_events, "read", paged=True),
        _api("/v1/sessions/{id}/events", "POST", send_events, "read"),
        _api("/v1/sessions/{id}/events/stream", "GET", stream_events, "read"),
        _api("/v1/files", "GET", list_files, None, beta=None, paged=True),
        _api("/v1/deployments", "POST", create_deployment, None),
        _api("/v1/deployments", "GET", list_deployments, None, paged=True),
        _api("/v1/deployments/{id}", "GET", retrieve_deployment, None),
        _api("/v1/deployments/{id}", "POST", update_deployment, None),
        _api("/v1/deployments/{id}/run", "POST", run_deployment, None),
        _api("/v1/deployments/{id}/pause", "POST", pause_deployment, None),
        _api("/v1/deployments/{id}/unpause", "POST", unpause_deployment, None),
        _api("/v1/deployments/{id}/archive", "POST", archive_deployment, None),
        _api("/v1/deployment_runs", "GET", list_runs, None, paged=True),
        _api("/v1/deployment_runs/{id}", "GET", retrieve_run, None),
        _api("/v1/organizations/webhooks", "POST", create_org_webhook, None, beta=hooks),
        _api("/v1/organizations/webhooks", "GET", list_org_webhooks, None, beta=hooks),
        _api("/v1/organizations/webhooks/{id}", "GET", retrieve_org_webhook, None, beta=hooks),
        _api("/v1/organizations/webhooks/{id}", "POST", update_org_webhook, None, beta=hooks),
        _api("/v1/organizations/webhooks/{id}", "DELETE", delete_org_webhook, None, beta=hooks),
        _api(
            "/v1/organizations/webhooks/{id}/regenerate_signing_secret",
            "POST",
            regenerate_org_webhook_secret,
            None,
            beta=hooks,
        ),
    ]


def create_emulator(
    config: EmulatorConfig | None = None, *, emulator: Emulator | None = None
) -> Starlette:
    emu = emulator or Emulator(config)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        emu.spawn(deployments.scheduler(emu))
        try:
            yield
        finally:
            await emu.aclose()

    app = Starlette(
        routes=[*api_routes(), *control.routes],
        exception_handlers={
            APIError: handle_api_error,
            404: handle_not_found,
            405: handle_method_not_allowed,
        },
        lifespan=lifespan,
    )
    app.state.emulator = emu
    return app
