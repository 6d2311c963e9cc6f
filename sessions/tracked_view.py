"""One tracked session as an operator sees it: a listing row, a status label, its metadata.

Apart from the launcher so that listing sessions does not import the SDK (a CLI start costs
the SDK's import time, about a second)."""

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from handlers.spend import cap_from_metadata
from sessions.metadata import RESERVED_PREFIX
from store.models import TrackedSession


def describe_tracked(session: TrackedSession, now: datetime) -> dict[str, Any]:
    """One tracked session as `idlehook sessions --json` and `GET /sessions` show it."""
    age = (now - session.created_at).total_seconds() if session.created_at else None
    return {
        "id": session.id,
        "status": session.status,
        "stop_reason": session.stop_reason,
        "age_seconds": round(age, 1) if age is not None else None,
        "route": session.route,
        "owner": session.owner,
        "launched_by_us": session.launched_by_us,
        "agent_id": session.agent_id,
        "agent_version": session.agent_version,
        "environment_id": session.environment_id,
        "deadline": session.deadline.isoformat() if session.deadline else None,
        "result_captured": session.result_captured_at is not None,
        "cost_usd": session.cost_usd,
        "token_usd": session.token_usd,
        # The spend ceiling stamped at launch (and on each raise); None: uncapped.
        "budget_usd": cap_from_metadata(session.session_metadata),
        "reap_requested": session.reap_requested_at is not None,
        "created_at": session.created_at.isoformat() if session.created_at else None,
    }


def user_metadata(metadata: Mapping[str, str]) -> dict[str, str]:
    """The caller's own pairs: without the `idlehook_` keys stamped at launch."""
    return {k: v for k, v in sorted(metadata.items()) if not k.startswith(RESERVED_PREFIX)}


def status_label(status: str | None, stop_reason: str | None) -> str:
    """`idle (end_turn)`: an idle session's stop reason says whether it is done, waiting for an
    answer, or gave up."""
    label = status or "?"
    if status == "idle" and stop_reason:
        label += f" ({stop_reason})"
    return label
