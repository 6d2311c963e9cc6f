"""Pure: which handlers a notification wants, given the routes and what is known of the session.

The rules matched here; the I/O around them (fetch the session, record it) is handlers/routing.py.
"""

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from handlers.config import RouteRule
from handlers.events import is_idle


@dataclass(frozen=True)
class RouteFacts:
    """What a route rule may ask of a fetched session.

    None in its place: the session could not be fetched (deleted)."""

    status: str | None = None
    stop_reason: str | None = None
    agent_id: str | None = None
    deployment_id: str | None = None
    metadata: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class RouteDecision:
    handlers: tuple[str, ...]
    rules: tuple[str, ...]  # names (or indexes) of the rules that matched
    reason: str  # "matched", "no_rule", "stale_idle"
    # The shortest `idle_for` of the matching rules that set one: how long the reaper keeps it.
    idle_for_seconds: float | None = None


def _type_matches(rule: RouteRule, event_type: str) -> bool:
    return not rule.event_types or event_type in rule.event_types


def _needs_facts(rule: RouteRule) -> bool:
    return bool(
        rule.stop_reasons
        or rule.except_stop_reasons
        or rule.statuses
        or rule.agent_ids
        or rule.deployment_ids
        or rule.metadata
    )


def candidate_rules(rules: Sequence[RouteRule], event_type: str) -> list[RouteRule]:
    return [rule for rule in rules if _type_matches(rule, event_type)]


def needs_session(rules: Sequence[RouteRule], event_type: str) -> bool:
    """Fetch the session only when a rule asks about it, or to tell a stale idle from a real one."""
    candidates = candidate_rules(rules, event_type)
    if not candidates:
        return False
    return is_idle(event_type) or any(_needs_facts(rule) for rule in candidates)


def _facts_match(rule: RouteRule, facts: RouteFacts | None) -> bool:
    if not _needs_facts(rule):
        return True
    if facts is None:
        return False
    checks = (
        (rule.stop_reasons, facts.stop_reason),
        (rule.statuses, facts.status),
        (rule.agent_ids, facts.agent_id),
        (rule.deployment_ids, facts.deployment_id),
    )
    if any(wanted and value not in wanted for wanted, value in checks):
        return False
    if rule.except_stop_reasons and facts.stop_reason in rule.except_stop_reasons:
        return False
    return all(facts.metadata.get(key) == value for key, value in rule.metadata.items())


def route(rules: Sequence[RouteRule], event_type: str, facts: RouteFacts | None) -> RouteDecision:
    """Every matching rule contributes its handlers, deduplicated in first-seen order.

    An idle notification whose session is no longer idle when fetched is stale: the session was
    given more work after it idled, so it is not harvested as finished.
    """
    if is_idle(event_type) and facts is not None and facts.status != "idle":
        return RouteDecision(handlers=(), rules=(), reason="stale_idle")
    handlers: list[str] = []
    matched: list[str] = []
    keep: list[float] = []
    for index, rule in enumerate(rules):
        if not (_type_matches(rule, event_type) and _facts_match(rule, facts)):
            continue
        matched.append(rule.name or str(index))
        handlers.extend(name for name in rule.handlers if name not in handlers)
        seconds = rule.idle_for_seconds()
        if seconds is not None:
            keep.append(seconds)
    return RouteDecision(
        handlers=tuple(handlers),
        rules=tuple(matched),
        reason="matched" if matched else "no_rule",
        idle_for_seconds=min(keep) if keep else None,
    )
