"""SessionResult: what a finished session produced, built (purely) from what the API returned."""

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from anthropic.types.beta import BetaManagedAgentsSession
from pydantic import BaseModel, Field


class SessionResult(BaseModel):
    session_id: str
    status: str
    stop_reason: str | None = None
    final_message: str | None = None  # text blocks of the last agent.message, joined
    title: str | None = None
    agent_id: str | None = None
    agent_version: int | None = None
    deployment_id: str | None = None
    metadata: dict[str, str] = Field(default_factory=dict)
    usage: dict[str, Any] = Field(default_factory=dict)
    cost_usd: float | None = None  # from usage.list_cost (minor units)
    active_seconds: float | None = None  # billed runtime (usage.active_seconds)
    duration_seconds: float | None = None
    outcome_evaluations: list[dict[str, Any]] = Field(default_factory=list)
    files: list[dict[str, Any]] = Field(default_factory=list)
    event_count: int = 0
    created_at: datetime | None = None
    updated_at: datetime | None = None


def _attr(obj: Any, name: str) -> Any:
    if isinstance(obj, dict):
        return obj.get(name)
    return getattr(obj, name, None)


def final_message(events: Sequence[Any]) -> str | None:
    for event in reversed(events):
        if _attr(event, "type") == "agent.message":
            blocks = _attr(event, "content") or []
            texts = [_attr(b, "text") for b in blocks if _attr(b, "type") == "text"]
            return "\n".join(t for t in texts if t)
    return None


def latest_stop_reason(events: Sequence[Any]) -> str | None:
    for event in reversed(events):
        if _attr(event, "type") == "session.status_idle":
            reason = _attr(event, "stop_reason")
            return str(_attr(reason, "type")) if reason is not None else None
    return None


def cost_usd(session: BetaManagedAgentsSession) -> float | None:
    amount = session.usage.list_cost
    if amount is None or amount.currency != "USD":
        return None
    try:
        return int(amount.amount) / 100
    except ValueError:
        return None


def build_result(
    session: BetaManagedAgentsSession,
    events: Sequence[Any],
    files: Sequence[Any],
) -> SessionResult:
    def as_dict(item: Any) -> dict[str, Any]:
        return dict(item.to_dict(mode="json")) if hasattr(item, "to_dict") else dict(item)

    agent = session.agent
    return SessionResult(
        session_id=session.id,
        status=session.status,
        stop_reason=latest_stop_reason(events),
        final_message=final_message(events),
        title=session.title,
        agent_id=agent.id if agent is not None else None,
        agent_version=agent.version if agent is not None else None,
        deployment_id=session.deployment_id,
        metadata=dict(session.metadata or {}),
        usage=session.usage.to_dict(mode="json"),
        cost_usd=cost_usd(session),
        active_seconds=session.usage.active_seconds,
        duration_seconds=session.stats.duration_seconds if session.stats else None,
        outcome_evaluations=[as_dict(o) for o in session.outcome_evaluations or []],
        files=[as_dict(f) for f in files],
        event_count=len(events),
        created_at=session.created_at,
        updated_at=session.updated_at,
    )
