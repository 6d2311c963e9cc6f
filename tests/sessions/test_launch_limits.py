"""Per-launch `--max-running` and `--idle-for`: checked before anything is queued, kept on the
session's own metadata, and read back by the reaper from there."""

from datetime import timedelta

import pytest

from sessions.launcher import InvalidLaunch, LaunchRequest, prepare
from sessions.session_view import view_of
from store.models import utcnow


def request(**fields: str) -> LaunchRequest:
    return LaunchRequest.parse(
        {"agent": "agent_1", "environment": "env_1", "message": "go", **fields}
    )


def test_limits_are_stamped_on_the_session_and_the_reaper_reads_them() -> None:
    prepared = prepare(
        request(max_running="90m", idle_for="7d"), owner="o", strict_default=False, now=utcnow()
    )
    assert prepared.metadata["idlehook_max_running"] == "90m"
    assert prepared.metadata["idlehook_idle_for"] == "7d"
    assert prepared.create_params(1)["metadata"] == prepared.metadata

    class Session:
        id = "sesn_1"
        status = "running"
        created_at = updated_at = utcnow()
        metadata = prepared.metadata

    view = view_of(Session())
    assert (view.max_running, view.idle_for) == (timedelta(minutes=90), timedelta(days=7))


@pytest.mark.parametrize("name", ["max_running", "idle_for"])
def test_a_bad_duration_is_refused_before_anything_is_queued(name: str) -> None:
    with pytest.raises(InvalidLaunch, match=name):
        prepare(request(**{name: "soon"}), owner="o", strict_default=False, now=utcnow())


def test_no_limits_stamp_nothing() -> None:
    prepared = prepare(request(), owner="o", strict_default=False, now=utcnow())
    assert "idlehook_max_running" not in prepared.metadata
    assert "idlehook_idle_for" not in prepared.metadata
