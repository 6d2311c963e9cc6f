"""The pure reap policy: which sessions are orphans, what to do, and what holds it back."""

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from handlers.billing import Pricing
from sessions.reap_policy import (
    Action,
    Block,
    Keep,
    Kept,
    Ownership,
    ReapPolicy,
    Reason,
    Verdict,
    blocker,
    choose,
    futile,
    may_run_too_long,
    needs_archive,
    ownership,
    saving_per_hour,
    span,
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


def why_kept(result: Verdict | Kept) -> Keep:
    assert isinstance(result, Kept), result
    assert result.detail  # every kept row says why in words
    return result.reason


def test_fresh_idle_session_of_ours_is_kept():
    assert choose(view(), POLICY, NOW) == Kept(Keep.RESTING, "resting 1m of 15m idle_for")


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
    assert why_kept(choose(saved, default, NOW)) is Keep.RESTING
    rested = view(result_saved=True, updated_at=NOW - timedelta(hours=25))
    assert choose(rested, default, NOW) == Verdict(Action.DELETE, Reason.HANDLED)
    # A later status event is activity too, even when updated_at did not move.
    active = view(
        result_saved=True,
        updated_at=NOW - timedelta(hours=25),
        rested_at=NOW - timedelta(hours=1),
    )
    assert why_kept(choose(active, default, NOW)) is Keep.RESTING


def test_a_launch_or_a_route_sets_its_own_idle_for():
    default = ReapPolicy(owner="me")
    short = view(result_saved=True, updated_at=NOW - timedelta(minutes=20))
    assert why_kept(choose(short, default, NOW)) is Keep.RESTING
    assert choose(replace(short, idle_for=timedelta(minutes=10)), default, NOW) == Verdict(
        Action.DELETE, Reason.HANDLED
    )
    keep_longer = view(result_saved=True, updated_at=NOW - timedelta(minutes=20))
    assert (
        why_kept(choose(replace(keep_longer, idle_for=timedelta(days=7)), POLICY, NOW))
        is Keep.RESTING
    )


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
    assert why_kept(choose(view(**kw), POLICY, NOW)) is Keep.RESTING
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
    assert choose(replace(long_run, status="rescheduling"), limited, NOW) == Verdict(
        Action.INTERRUPT, Reason.MAX_RUNNING
    )
    short_run = view(status="running", run_started_at=NOW - timedelta(hours=1))
    assert why_kept(choose(short_run, limited, NOW)) is Keep.RUNNING
    # Off unless configured, and a run whose start was not read is never guessed at.
    assert why_kept(choose(long_run, POLICY, NOW)) is Keep.RUNNING
    assert why_kept(choose(replace(long_run, run_started_at=None), limited, NOW)) is Keep.RUNNING


def test_a_launch_max_running_overrides_the_policy():
    own_limit = view(
        status="running",
        run_started_at=NOW - timedelta(minutes=31),
        max_running=timedelta(minutes=30),
    )
    assert choose(own_limit, POLICY, NOW) == Verdict(Action.INTERRUPT, Reason.MAX_RUNNING)
    lenient = replace(own_limit, max_running=timedelta(hours=5))
    assert (
        why_kept(choose(lenient, replace(POLICY, max_running=timedelta(minutes=1)), NOW))
        is Keep.RUNNING
    )


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
    assert why_kept(choose(theirs, limited, NOW)) is Keep.UNOWNED
    loose = replace(limited, include_unowned=True)
    assert choose(theirs, loose, NOW) == Verdict(Action.INTERRUPT, Reason.MAX_RUNNING)
    foreign = replace(theirs, metadata={"idlehook_owner": "someone-else"})
    assert why_kept(choose(foreign, loose, NOW)) is Keep.FOREIGN


def test_running_past_deadline_is_interrupted_first():
    s = view(status="running", deadline=NOW - timedelta(minutes=1))
    assert choose(s, POLICY, NOW) == Verdict(Action.INTERRUPT, Reason.PAST_DEADLINE)
    assert blocker(s, Verdict(Action.INTERRUPT, Reason.PAST_DEADLINE), POLICY) is None


def test_running_within_deadline_is_left_alone():
    s = view(status="running", deadline=NOW + timedelta(minutes=1))
    assert why_kept(choose(s, POLICY, NOW)) is Keep.RUNNING


def test_excluded_by_metadata_never():
    s = view(status="terminated", metadata={"idlehook_owner": "me", "keep": "true"})
    assert why_kept(choose(s, POLICY, NOW)) is Keep.EXCLUDED


def test_another_instance_is_never_touched_even_with_unowned_enabled():
    s = view(status="terminated", metadata={"idlehook_owner": "someone-else"})
    loose = ReapPolicy(owner="me", include_unowned=True, max_age=timedelta(0))
    assert ownership(s, loose) is Ownership.FOREIGN
    assert why_kept(choose(s, loose, NOW)) is Keep.FOREIGN


def test_unowned_needs_the_switch_and_an_age():
    s = view(metadata={}, status="idle", created_at=NOW - timedelta(days=3))
    assert why_kept(choose(s, POLICY, NOW)) is Keep.UNOWNED
    switch_only = ReapPolicy(owner="me", include_unowned=True)
    assert why_kept(choose(s, switch_only, NOW)) is Keep.UNOWNED
    young = ReapPolicy(owner="me", include_unowned=True, max_age=timedelta(days=7))
    assert why_kept(choose(s, young, NOW)) is Keep.UNOWNED_YOUNG
    old = ReapPolicy(owner="me", include_unowned=True, max_age=timedelta(days=1))
    verdict = choose(s, old, NOW)
    assert verdict == Verdict(Action.DELETE, Reason.UNOWNED_MAX_AGE)
    # Nothing of ours was ever saved for it, so an unsaved result does not hold it back.
    assert blocker(s, verdict, old) is None
    running = view(metadata={}, status="running", created_at=NOW - timedelta(days=3))
    assert why_kept(choose(running, old, NOW)) is Keep.RUNNING


def test_deployment_sessions_are_ours_only_when_listed():
    s = view(metadata={}, status="terminated", deployment_id="depl_1")
    assert why_kept(choose(s, POLICY, NOW)) is Keep.UNOWNED
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


def test_every_kept_session_says_why_in_words():
    limited = replace(POLICY, max_running=timedelta(hours=2))
    young_unowned = ReapPolicy(owner="me", include_unowned=True, max_age=timedelta(days=7))
    cases = [
        (view(metadata={"idlehook_owner": "me", "keep": "true"}), POLICY, "excluded: keep=true"),
        (
            view(updated_at=NOW - timedelta(hours=3)),
            ReapPolicy(owner="me"),
            "resting 3h of 24h idle_for",
        ),
        (
            view(metadata={"idlehook_owner": "other-instance"}),
            POLICY,
            "foreign owner: other-instance",
        ),
        (view(metadata={}), POLICY, "unowned (set --include-unowned and --max-age)"),
        (
            view(metadata={}),
            replace(POLICY, include_unowned=True),
            "unowned: --include-unowned deletes nothing without --max-age (or [reaper] max_age); "
            "only runaways past max_running are interrupted",
        ),
        (view(metadata={}), young_unowned, "unowned younger than max_age (2h of 7d)"),
        (view(status="running"), POLICY, "running, no max_running set"),
        (
            view(status="running", run_started_at=NOW - timedelta(minutes=65)),
            limited,
            "running 1h05m of 2h max_running",
        ),
        (
            view(status="running", deadline=NOW + timedelta(minutes=30)),
            POLICY,
            "running, no max_running set; deadline in 30m",
        ),
    ]
    for session, policy, detail in cases:
        kept = choose(session, policy, NOW)
        assert isinstance(kept, Kept), (session, kept)
        assert kept.detail == detail


def test_a_renamed_owner_keeps_what_this_store_launched():
    renamed = ReapPolicy(owner="B", idle_for=timedelta(0), archive_before_delete=False)
    launched = view(
        metadata={"idlehook_owner": "A"},
        launched_by_us=True,
        launched_owner="A",
        result_saved=True,
    )
    assert ownership(launched, renamed) is Ownership.OURS
    assert choose(launched, renamed, NOW) == Verdict(Action.DELETE, Reason.HANDLED)
    # Another instance's (not launched from this store), or one relabelled since its launch.
    theirs = replace(launched, metadata={"idlehook_owner": "C"}, launched_by_us=False)
    assert ownership(theirs, renamed) is Ownership.FOREIGN
    assert choose(theirs, renamed, NOW) == Kept(Keep.FOREIGN, "foreign owner: C")
    relabelled = replace(launched, metadata={"idlehook_owner": "C"})
    assert ownership(relabelled, renamed) is Ownership.FOREIGN
    # Seen (by a webhook) but not launched here: the label alone decides.
    seen = replace(launched, launched_by_us=False, launched_owner=None)
    assert ownership(seen, renamed) is Ownership.FOREIGN


def test_span_reads_as_a_person_writes_durations():
    assert [span(timedelta(seconds=s)) for s in (0, 45, 720, 10800, 11100, 604800)] == [
        "0s",
        "45s",
        "12m",
        "3h",
        "3h05m",
        "7d",
    ]


def test_settings_that_cannot_act_are_named():
    assert futile(ReapPolicy(owner="me")) == []
    switch_only = ReapPolicy(owner="me", include_unowned=True)
    assert futile(switch_only) == [
        "--include-unowned deletes nothing without --max-age (or [reaper] max_age); "
        "only runaways past max_running are interrupted"
    ]
    aged = ReapPolicy(owner="me", max_age=timedelta(days=7))
    assert futile(aged) == []  # from the config file, waiting for the switch
    assert "without --include-unowned" in futile(aged, given=["max_age"])[0]
    unarchived = ReapPolicy(owner="me", archive_before_delete=False)
    assert "result_not_saved" in futile(unarchived, given=["idle_for"])[0]
    assert futile(ReapPolicy(owner="me"), given=["idle_for"]) == []
