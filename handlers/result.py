"""SessionResult: what a finished session produced, built (purely) from what the API returned."""

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from anthropic.types.beta import BetaManagedAgentsSession
from pydantic import BaseModel, Field

from handlers.billing import Pricing, session_cost

# A stamp idlehook wrote a moment before the API stamped the run's start is still that run's.
_CLOCK_SKEW = timedelta(seconds=5)


@dataclass(frozen=True)
class Interruption:
    """idlehook's own record that it sent `user.interrupt` (when, and why)."""

    at: datetime
    reason: str  # "past_deadline" | "max_running"


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
    # How the latest run ended: its stop reason, `interrupted` when a `user.interrupt` cut it
    # short (the API reports those as `end_turn`), or `terminated`.
    outcome: str | None = None
    interrupted_by: str | None = None  # "idlehook" or "user"
    interrupt_reason: str | None = None  # idlehook's: "past_deadline" | "max_running"
    usage: dict[str, Any] = Field(default_factory=dict)
    billing_model: str = "running"
    cost_usd: float | None = None  # runtime + tokens so far, under `billing_model`
    runtime_usd: float | None = None
    token_usd: float | None = None  # usage.list_cost
    active_seconds: float | None = None  # billed runtime (usage.active_seconds)
    duration_seconds: float | None = None
    outcome_evaluations: list[dict[str, Any]] = Field(default_factory=list)
    # The files the session produced; None: not listed (listing costs a call: `[archive]
    # list_files`), which says nothing about whether it produced any.
    files: list[dict[str, Any]] | None = None
    event_count: int = 0
    created_at: datetime | None = None
    updated_at: datetime | None = None


def as_dict(item: Any) -> dict[str, Any]:
    """An SDK model (or a plain mapping) as JSON-ready values."""
    return dict(item.to_dict(mode="json")) if hasattr(item, "to_dict") else dict(item)


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


def _latest_run(events: Sequence[Any]) -> Sequence[Any]:
    """The events of the latest run: from its `session.status_running` to its end."""
    for index in range(len(events) - 1, -1, -1):
        if _attr(events[index], "type") == "session.status_running":
            return events[index:]
    return events


def _processed_at(event: Any) -> datetime | None:
    value = _attr(event, "processed_at")
    return value if isinstance(value, datetime) else None


def run_outcome(
    status: str, events: Sequence[Any], interruption: Interruption | None = None
) -> tuple[str | None, str | None, str | None]:
    """(outcome, interrupted_by, interrupt_reason) of the session's latest run."""
    if status == "terminated":
        return "terminated", None, None
    run = _latest_run(events)
    started = _processed_at(run[0]) if run else None
    ours = interruption is not None and (
        started is None or interruption.at >= started - _CLOCK_SKEW
    )
    # The API echoes a sent interrupt into the event list: without one in this run, nothing
    # cut it short (idlehook's record may be of an interrupt that never reached the API).
    interrupted = any(_attr(e, "type") == "user.interrupt" for e in run)
    if interrupted and status == "idle":
        if ours:
            assert interruption is not None
            return "interrupted", "idlehook", interruption.reason
        return "interrupted", "user", None
    return latest_stop_reason(events), None, None


def build_result(
    session: BetaManagedAgentsSession,
    events: Sequence[Any],
    files: Sequence[Any] | None = None,
    *,
    pricing: Pricing | None = None,
    interruption: Interruption | None = None,
) -> SessionResult:
    """`files` None: not listed, and the result says so (None, not an empty list)."""
    agent = session.agent
    cost = session_cost(session, pricing or Pricing())
    outcome, interrupted_by, interrupt_reason = run_outcome(session.status, events, interruption)
    return SessionResult(
        session_id=session.id,
        status=session.status,
        stop_reason=latest_stop_reason(events),
        outcome=outcome,
        interrupted_by=interrupted_by,
        interrupt_reason=interrupt_reason,
        final_message=final_message(events),
        title=session.title,
        agent_id=agent.id if agent is not None else None,
        agent_version=agent.version if agent is not None else None,
        deployment_id=session.deployment_id,
        metadata=dict(session.metadata or {}),
        usage=session.usage.to_dict(mode="json"),
        billing_model=cost.model,
        cost_usd=cost.total_usd,
        runtime_usd=cost.runtime_usd,
        token_usd=cost.token_usd,
        active_seconds=session.usage.active_seconds,
        duration_seconds=session.stats.duration_seconds if session.stats else None,
        outcome_evaluations=[as_dict(o) for o in session.outcome_evaluations or []],
        files=None if files is None else [as_dict(f) for f in files],
        event_count=len(events),
        created_at=session.created_at,
        updated_at=session.updated_at,
    )
