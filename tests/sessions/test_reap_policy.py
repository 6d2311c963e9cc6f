"""The pure reap policy: which sessions are orphans, what to do, and what holds it back."""

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from sessions.reap_policy import (
    Action,
    Block,
    Ownership,
    ReapPolicy,
    Reason,
    Verdict,
    blocker,
    choose,
    needs_archive,
    ownership,
    saving_per_hour,
)
from sessions.session_view import SessionView, saved_since
from store.models import TrackedSession

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
POLICY = ReapPolicy(owner="me", exclude_metadata={"keep": "true"})


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


@pytest.mark.parametrize(
    ("kw", "reason"),
    [
        ({"status": "terminated"}, Reason.TERMINATED),
        ({"stop_reason": "budget_reached"}, Reason.BUDGET_REACHED),
        ({"result_saved": True}, Reason.HANDLED),
        ({"reap_requested": True}, Reason.REAP_REQUESTED),
        ({"deadline": NOW - timedelta(seconds=1)}, Reason.PAST_DEADLINE),
    ],
)
def test_each_kind_of_orphan(kw, reason):
    assert choose(view(**kw), POLICY, NOW) == Verdict(Action.DELETE, reason)


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


def test_saving_is_the_container_rate_for_deletes_only():
    priced = ReapPolicy(owner="me", container_usd_per_hour=0.5)
    assert saving_per_hour(view(), Verdict(Action.DELETE, Reason.HANDLED), priced) == 0.5
    assert saving_per_hour(view(), Verdict(Action.INTERRUPT, Reason.PAST_DEADLINE), priced) == 0


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
