"""SessionView: one session as the reaper judges it, the API's facts joined with the store's.

Built at the I/O edge (`view_of`); the policy in reap_policy.py only ever sees this.
"""

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from handlers.durations import DurationError, parse_duration
from sessions.metadata import DEADLINE_KEY, IDLE_FOR_KEY, MAX_RUNNING_KEY, OWNER_KEY
from store.models import TrackedSession


@dataclass(frozen=True)
class SessionView:
    id: str
    status: str  # rescheduling | running | idle | terminated, as the API says now
    created_at: datetime
    updated_at: datetime
    metadata: Mapping[str, str] = field(default_factory=dict)
    deployment_id: str | None = None
    archived: bool = False
    # Of the latest session.status_idle event (or as the store last recorded it).
    stop_reason: str | None = None
    deadline: datetime | None = None
    # From the store: did we launch it (and as which owner), is its result saved, is handler
    # work still queued.
    launched_by_us: bool = False
    launched_owner: str | None = None
    result_saved: bool = False  # saved since `rested_at`: a previous turn's save does not count
    pending_runs: int = 0
    pending_approvals: int = 0  # held tool calls a person has not answered yet
    reap_requested: bool = False
    # processed_at of the latest status event, when it was read from the event list.
    rested_at: datetime | None = None
    # When the current run began (busy sessions whose run length was asked about), else None.
    run_started_at: datetime | None = None
    # Per-session limits: from the launch (metadata) or the route that handled it.
    max_running: timedelta | None = None
    idle_for: timedelta | None = None

    @property
    def owner(self) -> str | None:
        return self.owner_label or self.launched_owner

    @property
    def owner_label(self) -> str | None:
        """The owner the session itself carries (its metadata), whoever launched it."""
        return self.metadata.get(OWNER_KEY) or None

    @property
    def last_activity(self) -> datetime:
        """When the session last changed, as far as we read: idle time counts from here."""
        return max(t for t in (self.updated_at, self.rested_at) if t is not None)


def duration_of(value: str | None) -> timedelta | None:
    """A duration from metadata; one we cannot read is ignored (the policy's default applies)."""
    if not value:
        return None
    try:
        return parse_duration(value)
    except DurationError:
        return None


def parse_rfc3339(value: str | None) -> datetime | None:
    """An RFC 3339 stamp as aware UTC; None for a missing or unreadable one."""
    if not value:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC)


def as_utc(value: datetime | str) -> datetime:
    if isinstance(value, str):
        parsed = parse_rfc3339(value)
        if parsed is None:
            raise ValueError(f"not an RFC 3339 timestamp: {value!r}")
        return parsed
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def saved_since(tracked: TrackedSession | None, rested_at: datetime | None) -> bool:
    """Are the result and transcript saved, and no older than the session's latest transition?

    The marks are never cleared, so once turn 1 is archived they stay set through turn 2: only
    a save at or after the latest status change (`rested_at`) covers what the session holds
    now. Without a transition time (never read, or no status event yet) the marks alone decide.
    """
    if tracked is None or tracked.result_captured_at is None or tracked.transcript_saved_at is None:
        return False
    if rested_at is None:
        return True
    saved_at = min(as_utc(tracked.result_captured_at), as_utc(tracked.transcript_saved_at))
    return saved_at >= rested_at


def view_of(
    session: Any,
    tracked: TrackedSession | None = None,
    *,
    pending_runs: int = 0,
    pending_approvals: int = 0,
    stop_reason: str | None = None,
    rested_at: datetime | None = None,
) -> SessionView:
    """Join an SDK session object with what the store knows about it.

    `stop_reason` and `rested_at`, when given, were read from the session's event list; the
    stop reason wins over the store's copy, which may predate the latest turn.
    """
    metadata: dict[str, str] = {str(k): str(v) for k, v in (session.metadata or {}).items()}
    deadline = parse_rfc3339(metadata.get(DEADLINE_KEY))
    if deadline is None and tracked is not None:
        deadline = tracked.deadline
    idle_for = duration_of(metadata.get(IDLE_FOR_KEY))
    if idle_for is None and tracked is not None and tracked.idle_for_seconds is not None:
        idle_for = timedelta(seconds=tracked.idle_for_seconds)
    return SessionView(
        id=session.id,
        status=str(session.status),
        created_at=as_utc(session.created_at),
        updated_at=as_utc(session.updated_at),
        metadata=metadata,
        deployment_id=getattr(session, "deployment_id", None),
        archived=getattr(session, "archived_at", None) is not None,
        stop_reason=stop_reason or (tracked.stop_reason if tracked is not None else None),
        deadline=deadline,
        launched_by_us=bool(tracked is not None and tracked.launched_by_us),
        launched_owner=tracked.owner if tracked is not None else None,
        result_saved=saved_since(tracked, rested_at),
        pending_runs=pending_runs,
        pending_approvals=pending_approvals,
        reap_requested=bool(tracked is not None and tracked.reap_requested_at is not None),
        rested_at=rested_at,
        max_running=duration_of(metadata.get(MAX_RUNNING_KEY)),
        idle_for=idle_for,
    )
