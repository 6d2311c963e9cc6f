"""Pure: is this session an orphan, what should be done to it (or why it is kept), and may it
be done now.

No SDK, no database, no clock: the reaper passes a SessionView, the policy and `now`.
"""

from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum

from handlers.billing import Pricing, delete_saving_per_hour, interrupt_saving_per_hour
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
    MAX_RUNNING = "max_running"  # one run has gone on longer than `max_running`
    BUDGET_REACHED = "budget_reached"  # stopped on its budget and nobody raised it in idle_for
    HANDLED = "handled"  # result and transcript saved, then idle for `idle_for`
    REAP_REQUESTED = "reap_requested"  # the deadline watchdog interrupted it for us
    IDLE_PAST_GRACE = "idle_past_grace"  # idle for `idle_for`, nothing saved it (yet)
    UNOWNED_MAX_AGE = "unowned_max_age"


class Block(StrEnum):
    """Why a chosen session is held back this run."""

    PENDING_HANDLERS = "pending_handlers"
    AWAITING_APPROVAL = "awaiting_approval"  # a person may still answer its held tool call
    RESULT_NOT_SAVED = "result_not_saved"
    CHANGED = "changed_since_chosen"
    STILL_RUNNING = "still_running"


@dataclass(frozen=True)
class ReapPolicy:
    owner: str
    idle_for: timedelta = timedelta(hours=24)
    include_unowned: bool = False
    max_age: timedelta | None = None
    owned_deployments: frozenset[str] = frozenset()
    exclude_metadata: Mapping[str, str] = field(default_factory=dict)
    archive_before_delete: bool = True
    # A run going on longer than this is interrupted (None: never, unless a launch set one).
    max_running: timedelta | None = None
    pricing: Pricing = field(default_factory=Pricing)


@dataclass(frozen=True)
class Verdict:
    action: Action
    reason: Reason


class Keep(StrEnum):
    """Why an examined session is left alone this run: every one gets a row saying so."""

    EXCLUDED = "excluded"  # matches [reaper] exclude_metadata (keep=true)
    FOREIGN = "foreign_owner"  # another idlehook instance's
    UNOWNED = "unowned"  # nobody's, and the switch or an age that would let it go is missing
    UNOWNED_YOUNG = "unowned_young"  # nobody's, younger than max_age
    RUNNING = "running"  # a run in progress that no deadline or max_running has passed
    RESTING = "resting"  # resting, but not yet for idle_for
    STATUS = "status"  # a status the reaper has no rule for


@dataclass(frozen=True)
class Kept:
    reason: Keep
    detail: str  # in words a person can check: "resting 3h of 24h idle_for"


# Said by the CLI (a warning) and by every unowned session's kept row alike.
UNOWNED_NEEDS_AGE = (
    "--include-unowned deletes nothing without --max-age (or [reaper] max_age); "
    "only runaways past max_running are interrupted"
)


def span(delta: timedelta) -> str:
    """A duration as a person reads it: 45s, 12m, 3h, 3h05m, 7d."""
    seconds = max(0, int(delta.total_seconds()))
    if seconds < 60:
        return f"{seconds}s"
    minutes = seconds // 60
    if minutes < 60:
        return f"{minutes}m"
    hours, rest = divmod(minutes, 60)
    if rest:
        return f"{hours}h{rest:02d}m"
    return f"{hours // 24}d" if hours >= 48 and hours % 24 == 0 else f"{hours}h"


def ownership(s: SessionView, policy: ReapPolicy) -> Ownership:
    if s.owner == policy.owner:
        return Ownership.OURS
    # By record: a session this store launched stays ours when `owner` is renamed, as long as
    # it still carries the label it was launched with (or none). One relabelled since, or one
    # another instance launched (not in this store), is not ours.
    if s.launched_by_us and s.owner_label in (None, s.launched_owner):
        return Ownership.OURS
    if s.deployment_id is not None and s.deployment_id in policy.owned_deployments:
        return Ownership.OURS
    return Ownership.UNOWNED if s.owner is None else Ownership.FOREIGN


def exclusion(s: SessionView, policy: ReapPolicy) -> str | None:
    """The `exclude_metadata` pair that keeps this session ("keep=true"), if any."""
    for key, value in policy.exclude_metadata.items():
        if s.metadata.get(key) == value:
            return f"{key}={value}"
    return None


def excluded(s: SessionView, policy: ReapPolicy) -> bool:
    return exclusion(s, policy) is not None


def max_running(s: SessionView, policy: ReapPolicy) -> timedelta | None:
    """The run-length limit for this session: its launch's own, else the policy's."""
    return s.max_running if s.max_running is not None else policy.max_running


def run_too_long(s: SessionView, policy: ReapPolicy, now: datetime) -> bool:
    limit = max_running(s, policy)
    return (
        s.status in BUSY
        and limit is not None
        and s.run_started_at is not None
        and now - s.run_started_at >= limit
    )


def may_run_too_long(s: SessionView, policy: ReapPolicy, now: datetime) -> bool:
    """Worth reading when its run started? A run starts after its session is created, so a
    session younger than the limit cannot be over it: no call spent on it."""
    limit = max_running(s, policy)
    return s.status in BUSY and limit is not None and now - s.created_at >= limit


def idle_for(s: SessionView, policy: ReapPolicy) -> timedelta:
    return s.idle_for if s.idle_for is not None else policy.idle_for


def choose(s: SessionView, policy: ReapPolicy, now: datetime) -> Verdict | Kept:
    """The action an orphan calls for, or why the session is kept.

    Under the documented billing a resting session costs nothing, so a finished one is kept
    for follow-ups until it has rested `idle_for`; a run that will not end is what costs, and
    is interrupted past `max_running`.
    """
    matched = exclusion(s, policy)
    if matched is not None:
        return Kept(Keep.EXCLUDED, f"excluded: {matched}")
    owned = ownership(s, policy)
    if owned is Ownership.FOREIGN:
        return Kept(Keep.FOREIGN, f"foreign owner: {s.owner}")
    if owned is Ownership.UNOWNED:
        return _unowned(s, policy, now)
    if s.status == "terminated":
        return Verdict(Action.DELETE, Reason.TERMINATED)
    if s.deadline is not None and now > s.deadline:
        action = Action.INTERRUPT if s.status in BUSY else Action.DELETE
        return Verdict(action, Reason.PAST_DEADLINE)
    if run_too_long(s, policy, now):
        return Verdict(Action.INTERRUPT, Reason.MAX_RUNNING)
    if s.status in BUSY:
        return Kept(Keep.RUNNING, _running(s, policy, now))
    if s.status != "idle":
        return Kept(Keep.STATUS, f"status {s.status}: nothing to do")
    if s.reap_requested:
        return Verdict(Action.DELETE, Reason.REAP_REQUESTED)
    rested, kept_for = now - s.last_activity, idle_for(s, policy)
    if rested < kept_for:
        return Kept(Keep.RESTING, f"resting {span(rested)} of {span(kept_for)} idle_for")
    if s.result_saved:
        return Verdict(Action.DELETE, Reason.HANDLED)
    if s.stop_reason == "budget_reached":
        return Verdict(Action.DELETE, Reason.BUDGET_REACHED)
    return Verdict(Action.DELETE, Reason.IDLE_PAST_GRACE)


def _running(s: SessionView, policy: ReapPolicy, now: datetime) -> str:
    limit = max_running(s, policy)
    if limit is None:
        said = "running, no max_running set"
    elif s.run_started_at is not None:
        said = f"running {span(now - s.run_started_at)} of {span(limit)} max_running"
    else:  # younger than the limit: its run start was not read
        said = f"running, under {span(limit)} max_running"
    if s.deadline is not None:
        said += f"; deadline in {span(s.deadline - now)}"
    return said


def _unowned(s: SessionView, policy: ReapPolicy, now: datetime) -> Verdict | Kept:
    if not policy.include_unowned:
        return Kept(Keep.UNOWNED, "unowned (set --include-unowned and --max-age)")
    # A runaway costs whoever owns it: with the switch on, stopping it needs no age.
    if run_too_long(s, policy, now):
        return Verdict(Action.INTERRUPT, Reason.MAX_RUNNING)
    # Someone else's session is deleted only when asked twice: the switch, and an age.
    if policy.max_age is None:
        return Kept(Keep.UNOWNED, f"unowned: {UNOWNED_NEEDS_AGE}")
    if s.status not in RESTING:
        return Kept(Keep.RUNNING, f"unowned, {_running(s, policy, now)}")
    age = now - s.created_at
    if age < policy.max_age:
        return Kept(
            Keep.UNOWNED_YOUNG,
            f"unowned younger than max_age ({span(age)} of {span(policy.max_age)})",
        )
    return Verdict(Action.DELETE, Reason.UNOWNED_MAX_AGE)


def futile(policy: ReapPolicy, *, given: Collection[str] = ()) -> list[str]:
    """Settings that cannot do what they ask, in words for a warning; `given` names the
    command-line flags set (a setting only in the config file may be waiting for a flag)."""
    said: list[str] = []
    if policy.include_unowned and policy.max_age is None:
        said.append(UNOWNED_NEEDS_AGE)
    if "max_age" in given and not policy.include_unowned:
        said.append(
            "--max-age applies only to unowned sessions; without --include-unowned "
            "(or [reaper] include_unowned) it deletes nothing"
        )
    if "idle_for" in given and not policy.archive_before_delete:
        said.append(
            "--idle-for deletes only sessions whose result a route saved: with [reaper] "
            "archive_before_delete = false the rest are kept (result_not_saved)"
        )
    return said


def blocker(s: SessionView, verdict: Verdict, policy: ReapPolicy) -> Block | None:
    """Why `verdict` must not be carried out now, or None when it may."""
    # Stopping a run loses nothing (its result is saved once it rests), and a busy session's
    # lane may hold the runs of its own running notifications: interrupts are never held.
    if verdict.action is Action.INTERRUPT:
        return None
    if s.pending_runs > 0:
        return Block.PENDING_HANDLERS
    # Resting for idle_for does not make a session waiting on a person an orphan; the approval
    # timeout (denied, then handed to the reaper) or a deadline does.
    if s.pending_approvals > 0 and verdict.reason in _RESTED:
        return Block.AWAITING_APPROVAL
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


_RESTED = (Reason.HANDLED, Reason.IDLE_PAST_GRACE, Reason.BUDGET_REACHED)


def needs_archive(s: SessionView, verdict: Verdict, policy: ReapPolicy) -> bool:
    return (
        verdict.action is Action.DELETE
        and policy.archive_before_delete
        and ownership(s, policy) is Ownership.OURS
        and not s.result_saved
    )


def saving_per_hour(s: SessionView, verdict: Verdict, policy: ReapPolicy) -> float:
    """Runtime an action stops, USD per hour, under the policy's billing model.

    Under `running` (as documented) a delete of a resting session saves nothing, and an
    interrupt stops a session billing its runtime; under `exists` only a delete saves."""
    if verdict.action is Action.INTERRUPT:
        return interrupt_saving_per_hour(policy.pricing)
    return delete_saving_per_hour(s.status, policy.pricing)
