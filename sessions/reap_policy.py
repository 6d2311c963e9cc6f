"""Pure: is this session an orphan, what should be done to it, and may it be done now.

No SDK, no database, no clock: the reaper passes a SessionView, the policy and `now`.
"""

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum

from sessions.session_view import SessionView

# Statuses that hold no turn in progress: a delete is possible.
RESTING = frozenset({"idle", "terminated"})
# Statuses in which a turn is in progress: interrupt first.
BUSY = frozenset({"running", "rescheduling"})


class Ownership(StrEnum):
    OURS = "ours"
    UNOWNED = "unowned"  # no idlehook owner at all: someone else's tooling, or by hand
    FOREIGN = "foreign"  # another idlehook instance's: never ours to touch


class Action(StrEnum):
    DELETE = "delete"
    INTERRUPT = "interrupt"


class Reason(StrEnum):
    TERMINATED = "terminated"
    PAST_DEADLINE = "past_deadline"
    BUDGET_REACHED = "budget_reached"
    HANDLED = "handled"  # result and transcript saved, still not deleted
    REAP_REQUESTED = "reap_requested"  # the deadline watchdog interrupted it for us
    IDLE_PAST_GRACE = "idle_past_grace"
    UNOWNED_MAX_AGE = "unowned_max_age"


class Block(StrEnum):
    """Why a chosen session is held back this run."""

    PENDING_HANDLERS = "pending_handlers"
    RESULT_NOT_SAVED = "result_not_saved"
    CHANGED = "changed_since_chosen"
    STILL_RUNNING = "still_running"


@dataclass(frozen=True)
class ReapPolicy:
    owner: str
    idle_for: timedelta = timedelta(minutes=15)
    include_unowned: bool = False
    max_age: timedelta | None = None
    owned_deployments: frozenset[str] = frozenset()
    exclude_metadata: Mapping[str, str] = field(default_factory=dict)
    archive_before_delete: bool = False
    container_usd_per_hour: float = 0.08


@dataclass(frozen=True)
class Verdict:
    action: Action
    reason: Reason


def ownership(s: SessionView, policy: ReapPolicy) -> Ownership:
    if s.owner == policy.owner:
        return Ownership.OURS
    if s.owner is None and s.launched_by_us:
        return Ownership.OURS
    if s.deployment_id is not None and s.deployment_id in policy.owned_deployments:
        return Ownership.OURS
    return Ownership.UNOWNED if s.owner is None else Ownership.FOREIGN


def excluded(s: SessionView, policy: ReapPolicy) -> bool:
    return any(s.metadata.get(key) == value for key, value in policy.exclude_metadata.items())


def choose(s: SessionView, policy: ReapPolicy, now: datetime) -> Verdict | None:
    """The action an orphan calls for, or None when the session is not an orphan."""
    if excluded(s, policy):
        return None
    owned = ownership(s, policy)
    if owned is Ownership.FOREIGN:
        return None
    if owned is Ownership.UNOWNED:
        return _unowned(s, policy, now)
    if s.status == "terminated":
        return Verdict(Action.DELETE, Reason.TERMINATED)
    if s.deadline is not None and now > s.deadline:
        action = Action.INTERRUPT if s.status in BUSY else Action.DELETE
        return Verdict(action, Reason.PAST_DEADLINE)
    if s.status != "idle":
        return None
    if s.stop_reason == "budget_reached":
        return Verdict(Action.DELETE, Reason.BUDGET_REACHED)
    if s.result_saved:
        return Verdict(Action.DELETE, Reason.HANDLED)
    if s.reap_requested:
        return Verdict(Action.DELETE, Reason.REAP_REQUESTED)
    if now - s.updated_at >= policy.idle_for:
        return Verdict(Action.DELETE, Reason.IDLE_PAST_GRACE)
    return None


def _unowned(s: SessionView, policy: ReapPolicy, now: datetime) -> Verdict | None:
    # Someone else's session is deleted only when asked twice: the switch, and an age.
    if not policy.include_unowned or policy.max_age is None:
        return None
    if s.status not in RESTING or now - s.created_at < policy.max_age:
        return None
    return Verdict(Action.DELETE, Reason.UNOWNED_MAX_AGE)


def blocker(s: SessionView, verdict: Verdict, policy: ReapPolicy) -> Block | None:
    """Why `verdict` must not be carried out now, or None when it may."""
    if s.pending_runs > 0:
        return Block.PENDING_HANDLERS
    if verdict.action is Action.INTERRUPT:
        return None
    if s.status in BUSY:
        return Block.STILL_RUNNING
    # We never archived someone else's session, so "saved" is a promise only ours carry.
    if (
        ownership(s, policy) is Ownership.OURS
        and not s.result_saved
        and not policy.archive_before_delete
    ):
        return Block.RESULT_NOT_SAVED
    return None


def needs_archive(s: SessionView, verdict: Verdict, policy: ReapPolicy) -> bool:
    return (
        verdict.action is Action.DELETE
        and policy.archive_before_delete
        and ownership(s, policy) is Ownership.OURS
        and not s.result_saved
    )


def saving_per_hour(s: SessionView, verdict: Verdict, policy: ReapPolicy) -> float:
    """Container cost a delete stops, in USD per hour: one container per live session."""
    if verdict.action is not Action.DELETE:
        return 0.0
    return policy.container_usd_per_hour
