"""The routing step (`_route` runs): gather session facts if a rule needs them, record them on
the tracked session, and decide the handlers. The decision itself is `route_rules.route` (pure).

A transition no rule wants costs no API call. One a rule wants costs two: the session, and, when
it is idle, its whole transcript (one page for an ordinary session), from which the latest stop
reason is read. Both are left in the delivery's shared reads (handlers.reads) for its handlers,
so archiving, logging and forwarding that transition read nothing more.
"""

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import anthropic
from anthropic import AsyncAnthropic
from anthropic.types.beta import BetaManagedAgentsSession

from handlers.billing import Pricing, session_cost
from handlers.config import RouteRule
from handlers.events import DELETED_TYPES, implied_status, is_session_event
from handlers.reads import DeliveryReads, read_transcript
from handlers.result import latest_stop_reason
from handlers.route_rules import (
    RouteDecision,
    RouteFacts,
    candidate_rules,
    needs_session,
    route,
)
from store.runs import DeliveryView
from store.sessions import SessionUpdate


def handlers_for_type(rules: Sequence[RouteRule], event_type: str) -> list[str]:
    """Every handler a rule for this type may run (which do depends on the session when it is
    routed): none means a re-route of such a delivery would run nothing."""
    names: list[str] = []
    for rule in candidate_rules(rules, event_type):
        names.extend(h for h in rule.handlers if h not in names)
    return names


def routed_types(rules: Sequence[RouteRule]) -> frozenset[str] | None:
    """The event types some rule runs a handler for; None: every type (a rule names none)."""
    types: set[str] = set()
    for rule in rules:
        if not rule.handlers:
            continue
        if not rule.event_types:
            return None
        types.update(rule.event_types)
    return frozenset(types)


@dataclass(frozen=True)
class RoutingOutcome:
    decision: RouteDecision
    facts: RouteFacts | None
    update: SessionUpdate | None  # None: not about a session, nothing to record
    fetched: bool
    session_gone: bool = False


def _facts(session: BetaManagedAgentsSession, stop_reason: str | None) -> RouteFacts:
    return RouteFacts(
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
    cost = session_cost(session, pricing, now=now)
    return SessionUpdate.from_api(
        session,
        stop_reason=stop_reason,
        cost_usd=cost.total_usd,
        token_usd=cost.token_usd,
        webhook_at=now,
        idle_for_seconds=decision.idle_for_seconds,
    )


async def route_delivery(
    delivery: DeliveryView,
    rules: Sequence[RouteRule],
    client: AsyncAnthropic,
    now: datetime,
    pricing: Pricing | None = None,
    reads: DeliveryReads | None = None,
) -> RoutingOutcome:
    """API errors other than a 404 propagate: the routing run is retried like any other.

    What is read goes into `reads` (the delivery's, shared with its handlers), read at `now`."""
    event_type = delivery.event_type
    session_id = delivery.session_id if is_session_event(event_type) else None
    if session_id is None:
        return RoutingOutcome(route(rules, event_type, None), None, None, fetched=False)
    thin = SessionUpdate(status=implied_status(event_type), webhook_at=now)
    # After `*.deleted` there is nothing left to fetch.
    if event_type in DELETED_TYPES or not needs_session(rules, event_type):
        deleted = now if event_type in DELETED_TYPES else None
        thin = SessionUpdate(status=thin.status, webhook_at=now, deleted_at=deleted)
        return RoutingOutcome(route(rules, event_type, None), None, thin, fetched=False)
    reads = reads if reads is not None else DeliveryReads()
    try:
        reads.started(now)
        session = reads.session = await client.beta.sessions.retrieve(session_id)
    except anthropic.NotFoundError:
        gone = SessionUpdate(webhook_at=now, deleted_at=now)
        return RoutingOutcome(
            route(rules, event_type, None), None, gone, fetched=True, session_gone=True
        )
    stop_reason = None
    # Only an idle session has a stop reason to route on; a stale idle (running again) routes
    # nowhere, and a handler of a terminated one reads the transcript if it needs it.
    if session.status == "idle":
        reads.events = await read_transcript(client, session_id)
        stop_reason = latest_stop_reason(reads.events)
    facts = _facts(session, stop_reason)
    decision = route(rules, event_type, facts)
    update = _update(session, stop_reason, now, pricing or Pricing(), decision)
    return RoutingOutcome(decision, facts, update, fetched=True)
