"""Ended sessions whose outcome no route saved: counted for `status`, the page and /metrics."""

from datetime import UTC, datetime, timedelta

from store import dashboard
from store.engine import make_engine
from store.sessions import SessionStore, SessionUpdate, unsaved_outcomes

T0 = datetime(2026, 12, 2, 12, 0, tzinfo=UTC)


def test_only_ended_unsaved_outcomes_count(db_url: str) -> None:
    engine = make_engine(db_url, pool_size=2)
    try:
        store = SessionStore(engine)

        def ended(sid: str, status: str, stop: str | None, at: datetime) -> None:
            store.record(sid, SessionUpdate(status=status, stop_reason=stop), at)

        ended("sesn_failed", "idle", "retries_exhausted", T0)
        ended("sesn_refused", "terminated", None, T0 + timedelta(seconds=1))
        ended("sesn_saved", "idle", "end_turn", T0)
        store.mark("sesn_saved", T0 + timedelta(seconds=5), result_captured=True)
        ended("sesn_waiting", "idle", "requires_action", T0)
        ended("sesn_running", "running", None, T0)
        ended("sesn_gone", "idle", "refusal", T0)
        store.mark("sesn_gone", T0, deleted=True)
        # Saved for turn 1, then turn 2 ended: that outcome is not saved yet.
        ended("sesn_second_turn", "idle", "end_turn", T0)
        store.mark("sesn_second_turn", T0 + timedelta(seconds=1), result_captured=True)
        ended("sesn_second_turn", "running", None, T0 + timedelta(minutes=1))
        ended("sesn_second_turn", "idle", "end_turn", T0 + timedelta(minutes=2))

        count, ids = unsaved_outcomes(engine)
        assert count == 3
        assert set(ids) == {"sesn_failed", "sesn_refused", "sesn_second_turn"}
        assert unsaved_outcomes(engine, limit=1)[1] == ["sesn_failed"]  # the oldest first

        view = dashboard.load(engine, T0 + timedelta(hours=1))
        assert view.totals.unsaved_outcomes == 3
        flagged = {row.id for row in view.sessions if row.unsaved}
        assert flagged == {"sesn_failed", "sesn_refused", "sesn_second_turn"}
    finally:
        engine.dispose()
