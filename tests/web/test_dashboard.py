"""The page's read-only queries on SQLite and PostgreSQL, the per-minute bucketing, and the HTML
rendering (escaping, the chart, the approvals section only when the feature is there)."""

from datetime import UTC, datetime, timedelta

from sqlmodel import Session

from console import web_page
from store import dashboard
from store.engine import make_engine
from store.models import (
    Delivery,
    HandlerRun,
    ReaperAction,
    ReaperActionKind,
    RunState,
    TrackedSession,
)

NOW = datetime(2026, 5, 1, 12, 30, 40, tzinfo=UTC)


def seed(url: str) -> None:
    engine = make_engine(url, pool_size=1)
    try:
        with Session(engine) as db:
            db.add(TrackedSession(id="sesn_a1", status="idle", cost_usd=0.25, launched_by_us=True))
            db.add(TrackedSession(id="sesn_b2", status="running", cost_usd=0.5))
            deliveries = [
                Delivery(
                    event_id=f"wevt_{i}",
                    event_type="session.status_idled",
                    resource_id="sesn_a1",
                    session_id="sesn_a1",
                    received_at=NOW - timedelta(minutes=i % 3, seconds=5),
                    body="{}",
                    duplicates=1 if i == 0 else 0,
                )
                for i in range(6)
            ]
            old = Delivery(
                event_id="wevt_old",
                event_type="session.created",
                resource_id="sesn_b2",
                session_id="sesn_b2",
                received_at=NOW - timedelta(hours=3),
                body="{}",
            )
            db.add_all([*deliveries, old])
            db.flush()
            first = deliveries[0].id
            assert first is not None
            db.add_all(
                [
                    HandlerRun(
                        delivery_id=first,
                        lane="sesn_a1",
                        handler="_route",
                        state=RunState.SUCCEEDED,
                        duration_ms=1.0,
                        finished_at=NOW,
                    ),
                    HandlerRun(
                        delivery_id=first,
                        lane="sesn_a1",
                        position=1,
                        handler="archive",
                        state=RunState.SUCCEEDED,
                        duration_ms=100.0,
                        finished_at=NOW - timedelta(seconds=10),
                        updated_at=NOW,
                    ),
                    HandlerRun(
                        delivery_id=first,
                        lane="sesn_a1",
                        position=2,
                        handler="forward",
                        state=RunState.DEAD,
                        attempts=6,
                        duration_ms=300.0,
                        last_error="<script>alert(1)</script> 502 from hook",
                        finished_at=NOW - timedelta(seconds=20),
                        updated_at=NOW,
                    ),
                ]
            )
            db.add(
                ReaperAction(
                    run_id="r1",
                    session_id="sesn_a1",
                    action=ReaperActionKind.DELETED,
                    reason="idle",
                    at=NOW,
                    est_saving_usd_per_hour=0.08,
                )
            )
            db.add(
                ReaperAction(
                    run_id="r0",
                    session_id="sesn_b2",
                    action=ReaperActionKind.DELETED,
                    reason="idle",
                    dry_run=True,
                    at=NOW,
                    est_saving_usd_per_hour=0.08,
                )
            )
            db.commit()
    finally:
        engine.dispose()


def test_load_reads_everything_the_page_shows(db_url: str) -> None:
    seed(db_url)
    engine = make_engine(db_url, pool_size=1)
    try:
        view = dashboard.load(engine, NOW)
    finally:
        engine.dispose()
    t = view.totals
    assert t.sessions == 2
    assert abs(t.total_cost_usd - 0.75) < 1e-9
    assert (t.deliveries, t.duplicates) == (7, 1)
    assert t.runs_by_state == {"succeeded": 1, "dead": 1}  # the routing step is not a plugin
    assert t.reaped == 1  # the dry run did not delete anything
    assert abs(t.saving_usd_per_hour - 0.08) < 1e-9
    assert {s.id for s in view.sessions} == {"sesn_a1", "sesn_b2"}
    assert len(view.deliveries) == 7
    assert view.deliveries[0].id > view.deliveries[-1].id  # newest first
    assert {r.handler for r in view.runs} == {"archive", "forward"}
    assert [r.handler for r in view.dead_letters] == ["forward"]
    assert len(view.reaper) == 2

    assert len(view.chart) == 60
    assert view.chart[-1].start == datetime(2026, 5, 1, 12, 30, tzinfo=UTC)
    by_start = {b.start: b for b in view.chart}
    counts = [by_start[datetime(2026, 5, 1, 12, 30 - m, tzinfo=UTC)].deliveries for m in (0, 1, 2)]
    assert counts == [2, 2, 2]  # the three-hour-old one is outside the hour
    latest = by_start[datetime(2026, 5, 1, 12, 30, tzinfo=UTC)]
    assert latest.runs == 2
    assert latest.mean_latency_ms == 200.0


def test_minute_buckets_fill_gaps_and_merge_partial_minutes() -> None:
    buckets = dashboard.minute_buckets(
        NOW,
        [(NOW - timedelta(minutes=5), 3), (NOW - timedelta(minutes=5, seconds=41), 1)],
        [(NOW, 2, 10.0), (NOW.replace(second=5), 2, 30.0)],
        minutes=10,
    )
    assert len(buckets) == 10
    assert buckets[0].start == datetime(2026, 5, 1, 12, 21, tzinfo=UTC)
    assert [b.deliveries for b in buckets] == [0, 0, 0, 1, 3, 0, 0, 0, 0, 0]
    assert buckets[-1].runs == 4
    assert buckets[-1].mean_latency_ms == 20.0
    assert buckets[0].mean_latency_ms is None


def test_render_escapes_agent_written_text_and_draws_the_chart(sqlite_url: str) -> None:
    seed(sqlite_url)
    engine = make_engine(sqlite_url, pool_size=1)
    try:
        view = dashboard.load(engine, NOW)
    finally:
        engine.dispose()
    html = web_page.render(view, None, nonce="n0nce")
    assert "<script>alert(1)</script>" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert html.count('class="bar"') == 3
    assert "<polyline" in html
    assert "Pending approvals" not in html  # feature absent: no section, no script
    assert "data-approval" not in html
    # The seeded dead letter has its recovery buttons (console/recovery_page.py), scripted.
    assert html.count("data-replay=") == html.count("data-discard=") >= 1
    assert 'nonce="n0nce"' in html


def test_render_lists_pending_approvals_with_buttons(sqlite_url: str) -> None:
    from store.approvals import PendingApproval

    engine = make_engine(sqlite_url, pool_size=1)
    try:
        view = dashboard.load(engine, NOW)
    finally:
        engine.dispose()
    pending = [
        PendingApproval(
            id=7,
            session_id="sesn_x",
            tool_use_id="toolu_1",
            tool_name="rm_rf",
            input={"path": "/"},
            requested_at=NOW,
            expires_at=None,
        )
    ]
    html = web_page.render(view, pending, nonce="abc")
    assert 'data-approval="7" data-decision="allow"' in html
    assert 'data-approval="7" data-decision="deny"' in html
    assert '<script nonce="abc">' in html
    assert '"X-Idlehook-CSRF": "1"' in html
    assert 'credentials: "same-origin"' in html
    empty = web_page.render(view, [], nonce="abc")
    assert "Nothing waits for a decision." in empty
