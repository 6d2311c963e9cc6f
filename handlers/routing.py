"""The routing step (`_route` runs): gather session facts if a rule needs them, record them on
the tracked session, and decide the handlers. The decision itself is `router.route` (pure)."""

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import anthropic
from anthropic import AsyncAnthropic
from anthropic.types.beta import BetaManagedAgentsSession

from handlers.billing import Pricing, session_cost
from handlers.events import DELETED_TYPES, implied_status, is_session_event
from handlers.router import RouteDecision, SessionFacts, needs_session, route
from idlehook.settings import RouteRule
from store.runs import DeliveryView
from store.sessions import SessionUpdate


@dataclass(frozen=True)
class RoutingOutcome:
    decision: RouteDecision
    facts: SessionFacts | None
    update: SessionUpdate | None  # None: not about a session, nothing to record
    fetched: bool
    session_gone: bool = False


async def latest_stop_reason(client: AsyncAnthropic, session_id: str) -> str | None:
    page = await client.beta.sessions.events.list(
        session_id, types=["session.status_idle"], order="desc", limit=1
    )
    for event in page.data:
        reason = getattr(event, "stop_reason", None)
        return str(reason.type) if reason is not None else None
    return None


def _facts(session: BetaManagedAgentsSession, stop_reason: str | None) -> SessionFacts:
    return SessionFacts(
        status=session.status,
        stop_reason=stop_reason,
        agent_id=session.agent.id if session.agent is not None else None,
        deployment_id=session.deployment_id,
        metadata=dict(session.metadata or {}),
    )


def _update(
    session: BetaManagedAgentsSession,
    stop_reason: str | None,
    now: datetime,
    pricing: Pricing,
    decision: RouteDecision,
) -> SessionUpdate:
    keep = decision.idle_for_seconds
    cost = session_cost(session, pricing, now=now)
    return SessionUpdate(
        status=session.status,
        stop_reason=stop_reason,
        agent_id=session.agent.id if session.agent is not None else None,
        agent_version=session.agent.version if session.agent is not None else None,
        environment_id=session.environment_id,
        deployment_id=session.deployment_id,
        title=session.title,
        metadata=dict(session.metadata or {}),
        created_at=session.created_at,
        active_seconds=session.usage.active_seconds,
        cost_usd=cost.total_usd,
        token_usd=cost.token_usd,
        webhook_at=now,
        extra={"idle_for_seconds": keep} if keep is not None else {},
    )


async def route_delivery(
    delivery: DeliveryView,
    rules: Sequence[RouteRule],
    client: AsyncAnthropic,
    now: datetime,
    pricing: Pricing | None = None,
) -> RoutingOutcome:
    """API errors other than a 404 propagate: the routing run is retried like any other."""
    event_type = delivery.event_type
    session_id = delivery.session_id if is_session_event(event_type) else None
    if session_id is None:
        return RoutingOutcome(route(rules, event_type, None), None, None, fetched=False)
    thin = SessionUpdate(status=implied_status(event_type), webhook_at=now)
    # After `*.deleted` there is nothing left to fetch.
    if event_type in DELETED_TYPES or not needs_session(rules, event_type):
        extra = {"deleted_at": now} if event_type in DELETED_TYPES else {}
        thin = SessionUpdate(status=thin.status, webhook_at=now, extra=extra)
        return RoutingOutcome(route(rules, event_type, None), None, thin, fetched=False)
    try:
        session = await client.beta.sessions.retrieve(session_id)
    except anthropic.NotFoundError:
        gone = SessionUpdate(webhook_at=now, extra={"deleted_at": now})
        return RoutingOutcome(
            route(rules, event_type, None), None, gone, fetched=True, session_gone=True
        )
    stop_reason = await latest_stop_reason(client, session_id) if session.status == "idle" else None
    facts = _facts(session, stop_reason)
    decision = route(rules, event_type, facts)
    update = _update(session, stop_reason, now, pricing or Pricing(), decision)
    return RoutingOutcome(decision, facts, update, fetched=True)
