"""The pure reap policy: which sessions are orphans, what to do, and what holds it back."""

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from handlers.billing import Pricing
from sessions.reap_policy import (
    Action,
    Block,
    Ownership,
    ReapPolicy,
    Reason,
    Verdict,
    blocker,
    choose,
    may_run_too_long,
    needs_archive,
    ownership,
    saving_per_hour,
)
from sessions.session_view import SessionView, saved_since
from store.models import TrackedSession

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
POLICY = ReapPolicy(
    owner="me",
    exclude_metadata={"keep": "true"},
    idle_for=timedelta(minutes=15),
    archive_before_delete=False,
)


def view(**kw: Any) -> SessionView:
    base: dict[str, Any] = {
        "id": "sesn_1",
        "status": "idle",
        "created_at": NOW - timedelta(hours=2),
        "updated_at": NOW - timedelta(minutes=1),
        "metadata": {"idlehook_owner": "me"},
    }
    base.update(kw)
    return SessionView(**base)


def test_fresh_idle_session_of_ours_is_kept():
    assert choose(view(), POLICY, NOW) is None


def test_idle_past_grace_is_an_orphan_and_zero_grace_takes_it_at_once():
    old = view(updated_at=NOW - timedelta(minutes=20))
    assert choose(old, POLICY, NOW) == Verdict(Action.DELETE, Reason.IDLE_PAST_GRACE)
    now_idle = view(updated_at=NOW)
    zero = ReapPolicy(owner="me", idle_for=timedelta(0))
    assert choose(now_idle, zero, NOW) == Verdict(Action.DELETE, Reason.IDLE_PAST_GRACE)


def test_by_default_a_saved_session_is_kept_a_day_for_follow_ups():
    default = ReapPolicy(owner="me")
    assert default.idle_for == timedelta(hours=24)
    assert default.archive_before_delete
    saved = view(result_saved=True, updated_at=NOW - timedelta(hours=23))
    assert choose(saved, default, NOW) is None
    rested = view(result_saved=True, updated_at=NOW - timedelta(hours=25))
    assert choose(rested, default, NOW) == Verdict(Action.DELETE, Reason.HANDLED)
    # A later status event is activity too, even when updated_at did not move.
    active = view(
        result_saved=True,
        updated_at=NOW - timedelta(hours=25),
        rested_at=NOW - timedelta(hours=1),
    )
    assert choose(active, default, NOW) is None


def test_a_launch_or_a_route_sets_its_own_idle_for():
    default = ReapPolicy(owner="me")
    short = view(result_saved=True, updated_at=NOW - timedelta(minutes=20))
    assert choose(short, default, NOW) is None
    assert choose(replace(short, idle_for=timedelta(minutes=10)), default, NOW) == Verdict(
        Action.DELETE, Reason.HANDLED
    )
    keep_longer = view(result_saved=True, updated_at=NOW - timedelta(minutes=20))
    assert choose(replace(keep_longer, idle_for=timedelta(days=7)), POLICY, NOW) is None


@pytest.mark.parametrize(
    ("kw", "reason"),
    [
        ({"status": "terminated"}, Reason.TERMINATED),
        ({"reap_requested": True}, Reason.REAP_REQUESTED),
        ({"deadline": NOW - timedelta(seconds=1)}, Reason.PAST_DEADLINE),
    ],
)
def test_orphans_taken_at_once(kw, reason):
    assert choose(view(**kw), POLICY, NOW) == Verdict(Action.DELETE, reason)


@pytest.mark.parametrize(
    ("kw", "reason"),
    [
        ({"stop_reason": "budget_reached"}, Reason.BUDGET_REACHED),
        ({"result_saved": True}, Reason.HANDLED),
        ({"stop_reason": "refusal"}, Reason.IDLE_PAST_GRACE),
    ],
)
def test_resting_sessions_wait_out_idle_for(kw, reason):
    # A person may still raise a budget or follow up: nothing goes before idle_for.
    assert choose(view(**kw), POLICY, NOW) is None
    old = view(updated_at=NOW - timedelta(minutes=16), **kw)
    assert choose(old, POLICY, NOW) == Verdict(Action.DELETE, reason)


def test_a_run_longer_than_max_running_is_interrupted():
    limited = replace(POLICY, max_running=timedelta(hours=2))
    long_run = view(status="running", run_started_at=NOW - timedelta(hours=2, seconds=1))
    assert choose(long_run, limited, NOW) == Verdict(Action.INTERRUPT, Reason.MAX_RUNNING)
    assert blocker(long_run, Verdict(Action.INTERRUPT, Reason.MAX_RUNNING), limited) is None
    # Work queued in its lane (its own running notifications) does not hold an interrupt.
    busy_lane = replace(long_run, pending_runs=2)
    assert blocker(busy_lane, Verdict(Action.INTERRUPT, Reason.MAX_RUNNING), limited) is None
    assert choose(replace(long_run, status="rescheduling"), limited, NOW) is not None
    short_run = view(status="running", run_started_at=NOW - timedelta(hours=1))
    assert choose(short_run, limited, NOW) is None
    # Off unless configured, and a run whose start was not read is never guessed at.
    assert choose(long_run, POLICY, NOW) is None
    assert choose(replace(long_run, run_started_at=None), limited, NOW) is None


def test_a_launch_max_running_overrides_the_policy():
    own_limit = view(
        status="running",
        run_started_at=NOW - timedelta(minutes=31),
        max_running=timedelta(minutes=30),
    )
    assert choose(own_limit, POLICY, NOW) == Verdict(Action.INTERRUPT, Reason.MAX_RUNNING)
    lenient = replace(own_limit, max_running=timedelta(hours=5))
    assert choose(lenient, replace(POLICY, max_running=timedelta(minutes=1)), NOW) is None


def test_may_run_too_long_spends_no_read_on_young_sessions():
    limited = replace(POLICY, max_running=timedelta(hours=2))
    young = view(status="running", created_at=NOW - timedelta(hours=1))
    assert not may_run_too_long(young, limited, NOW)
    assert may_run_too_long(view(status="running"), limited, NOW)
    assert not may_run_too_long(view(status="idle"), limited, NOW)
    assert not may_run_too_long(view(status="running"), POLICY, NOW)


def test_someone_elses_runaway_is_stopped_only_with_the_switch():
    limited = replace(POLICY, max_running=timedelta(hours=2))
    theirs = view(metadata={}, status="running", run_started_at=NOW - timedelta(hours=3))
    assert choose(theirs, limited, NOW) is None
    loose = replace(limited, include_unowned=True)
    assert choose(theirs, loose, NOW) == Verdict(Action.INTERRUPT, Reason.MAX_RUNNING)
    foreign = replace(theirs, metadata={"idlehook_owner": "someone-else"})
    assert choose(foreign, loose, NOW) is None


def test_running_past_deadline_is_interrupted_first():
    s = view(status="running", deadline=NOW - timedelta(minutes=1))
    assert choose(s, POLICY, NOW) == Verdict(Action.INTERRUPT, Reason.PAST_DEADLINE)
    assert blocker(s, Verdict(Action.INTERRUPT, Reason.PAST_DEADLINE), POLICY) is None


def test_running_within_deadline_is_left_alone():
    s = view(status="running", deadline=NOW + timedelta(minutes=1))
    assert choose(s, POLICY, NOW) is None


def test_excluded_by_metadata_never():
    s = view(status="terminated", metadata={"idlehook_owner": "me", "keep": "true"})
    assert choose(s, POLICY, NOW) is None


def test_another_instance_is_never_touched_even_with_unowned_enabled():
    s = view(status="terminated", metadata={"idlehook_owner": "someone-else"})
    loose = ReapPolicy(owner="me", include_unowned=True, max_age=timedelta(0))
    assert ownership(s, loose) is Ownership.FOREIGN
    assert choose(s, loose, NOW) is None


def test_unowned_needs_the_switch_and_an_age():
    s = view(metadata={}, status="idle", created_at=NOW - timedelta(days=3))
    assert choose(s, POLICY, NOW) is None
    switch_only = ReapPolicy(owner="me", include_unowned=True)
    assert choose(s, switch_only, NOW) is None
    young = ReapPolicy(owner="me", include_unowned=True, max_age=timedelta(days=7))
    assert choose(s, young, NOW) is None
    old = ReapPolicy(owner="me", include_unowned=True, max_age=timedelta(days=1))
    verdict = choose(s, old, NOW)
    assert verdict == Verdict(Action.DELETE, Reason.UNOWNED_MAX_AGE)
    # Nothing of ours was ever saved for it, so an unsaved result does not hold it back.
    assert blocker(s, verdict, old) is None
    running = view(metadata={}, status="running", created_at=NOW - timedelta(days=3))
    assert choose(running, old, NOW) is None


def test_deployment_sessions_are_ours_only_when_listed():
    s = view(metadata={}, status="terminated", deployment_id="depl_1")
    assert choose(s, POLICY, NOW) is None
    listed = ReapPolicy(owner="me", owned_deployments=frozenset({"depl_1"}))
    assert choose(s, listed, NOW) == Verdict(Action.DELETE, Reason.TERMINATED)


def test_launched_by_us_without_owner_metadata_is_ours():
    s = view(metadata={}, launched_by_us=True, status="terminated")
    assert ownership(s, POLICY) is Ownership.OURS


def test_guards():
    delete = Verdict(Action.DELETE, Reason.IDLE_PAST_GRACE)
    assert blocker(view(pending_runs=1, result_saved=True), delete, POLICY) is (
        Block.PENDING_HANDLERS
    )
    assert blocker(view(), delete, POLICY) is Block.RESULT_NOT_SAVED
    assert blocker(view(result_saved=True), delete, POLICY) is None
    archiving = ReapPolicy(owner="me", archive_before_delete=True)
    assert blocker(view(), delete, archiving) is None
    assert needs_archive(view(), delete, archiving)
    assert not needs_archive(view(result_saved=True), delete, archiving)
    assert blocker(view(status="running", result_saved=True), delete, POLICY) is (
        Block.STILL_RUNNING
    )


def test_savings_follow_the_named_billing_model():
    delete = Verdict(Action.DELETE, Reason.HANDLED)
    interrupt = Verdict(Action.INTERRUPT, Reason.MAX_RUNNING)
    running = ReapPolicy(owner="me", pricing=Pricing("running", 0.5))
    # As documented: an idle session accrues no runtime, so deleting it saves $0.
    assert saving_per_hour(view(), delete, running) == 0.0
    assert saving_per_hour(view(status="running"), interrupt, running) == 0.5
    exists = ReapPolicy(owner="me", pricing=Pricing("exists", 0.5))
    assert saving_per_hour(view(), delete, exists) == 0.5
    assert saving_per_hour(view(status="running"), interrupt, exists) == 0.0


def test_a_save_counts_only_if_made_since_the_latest_transition():
    saved = TrackedSession(
        id="sesn_1", result_captured_at=NOW, transcript_saved_at=NOW - timedelta(seconds=1)
    )
    assert saved_since(saved, NOW - timedelta(seconds=1))
    assert not saved_since(saved, NOW)  # the transcript is a turn behind
    assert not saved_since(saved, NOW + timedelta(minutes=1))
    assert saved_since(saved, None)  # no transition read: the marks alone decide
    assert not saved_since(TrackedSession(id="sesn_1", result_captured_at=NOW), None)
    assert not saved_since(None, None)


def test_a_session_waiting_on_a_person_is_not_reaped_for_resting():
    waiting = view(
        stop_reason="requires_action",
        pending_approvals=1,
        updated_at=NOW - timedelta(days=2),
    )
    verdict = choose(waiting, POLICY, NOW)
    assert verdict == Verdict(Action.DELETE, Reason.IDLE_PAST_GRACE)
    assert blocker(waiting, verdict, POLICY) is Block.AWAITING_APPROVAL
    # The approval timed out (denied, reap requested) or the caller's deadline passed: it goes.
    archiving = replace(POLICY, archive_before_delete=True)
    for gone in (Reason.REAP_REQUESTED, Reason.PAST_DEADLINE):
        assert blocker(waiting, Verdict(Action.DELETE, gone), archiving) is None
