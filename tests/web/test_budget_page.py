"""Budgets on the operator page: spent/cap in the session table, and beside a session paused on
its cap a button that posts the raise with the page cookie and the CSRF header. The rendering
alone, then the whole service on loopback (emulator + `wiring.service`), then headless Chromium."""

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from sqlmodel import Session

from console import auth, web_page
from store import dashboard
from store.dashboard import SessionRow
from store.engine import make_engine
from store.models import TrackedSession
from tests.support.servers import wait_for
from tests.web.stack import TOKEN, WebStack, web_stack
from tests.web.test_browser import chromium, run_chromium

NOW = datetime(2026, 5, 1, 12, 30, 40, tzinfo=UTC)


def row(session_id: str, **change: Any) -> SessionRow:
    values: dict[str, Any] = {
        "id": session_id,
        "status": "idle",
        "stop_reason": "budget_reached",
        "route": None,
        "launched_by_us": True,
        "cost_usd": 5.31,  # runtime included: the cap is on tokens alone
        "token_usd": 4.99,
        "active_seconds": None,
        "created_at": NOW,
        "status_at": NOW,
        "result_captured": False,
        "deleted": False,
        "metadata": {"idlehook_budget_usd": "5.00"},
        **change,
    }
    return SessionRow(**values)


def render(*rows: SessionRow) -> str:
    totals = dashboard.Totals(0, 0.0, 0, 0, {}, 0, 0.0)
    return web_page.render(dashboard.Dashboard(NOW, totals, sessions=list(rows)), None, "n0nce")


def test_a_paused_session_gets_a_raise_button_and_the_script() -> None:
    html = render(row("sesn_paused"))
    assert "$4.99 / $5.00" in html
    assert 'data-budget-session="sesn_paused" data-budget-cap="5.00"' in html
    assert "Raise budget" in html
    assert '<script nonce="n0nce">' in html
    assert '"X-Idlehook-CSRF": "1"' in html
    assert '"/sessions/" + session + "/budget"' in html


def test_only_a_session_paused_on_its_cap_gets_the_button() -> None:
    html = render(
        row("sesn_running", status="running", stop_reason=None, token_usd=None),
        row("sesn_done", stop_reason="end_turn"),
        row("sesn_gone", deleted=True),
        row("sesn_free", metadata={}),
    )
    assert "$0.00 / $5.00" in html  # running, nothing recorded spent yet
    assert "data-budget-session" not in html
    assert "<script" not in html
    assert html.count("/ $5.00") == 3  # the uncapped session has no budget cell


def test_session_ids_are_escaped_in_the_button() -> None:
    html = render(row('sesn_"><b>x'))
    assert 'data-budget-session="sesn_&quot;&gt;&lt;b&gt;x"' in html


def test_load_reads_the_cap_from_the_tracked_metadata(sqlite_url: str) -> None:
    engine = make_engine(sqlite_url, pool_size=1)
    try:
        with Session(engine) as db:
            db.add(
                TrackedSession(
                    id="sesn_m", status="idle", session_metadata={"idlehook_budget_usd": "3.50"}
                )
            )
            db.commit()
        [loaded] = dashboard.load(engine, NOW).sessions
    finally:
        engine.dispose()
    assert loaded.metadata == {"idlehook_budget_usd": "3.50"}


# -- the whole service -----------------------------------------------------------------------


def paused_session(s: WebStack) -> str:
    """A budgeted session launched through POST /sessions, paused on its cap, and routed."""
    agent, env = s.agent_and_environment("budget-page")
    response = httpx.post(
        s.url + "/sessions",
        headers={"authorization": f"Bearer {TOKEN}"},
        json={
            "agent": agent,
            "environment": env,
            "message": "work",
            "metadata": {"emulator_script": "budget_reached"},
            "budget_usd": 5,
        },
        timeout=30,
    )
    assert response.status_code == 201, response.text
    session_id = str(response.json()["session_id"])

    def routed() -> bool:
        with Session(s.svc.engine) as db:
            tracked = db.get(TrackedSession, session_id)
            return tracked is not None and tracked.stop_reason == "budget_reached"

    wait_for(routed, timeout=30)
    return session_id


def test_the_button_posts_with_the_cookie_and_the_csrf_header(
    sqlite_url: str, tmp_path: Path
) -> None:
    with web_stack(sqlite_url, tmp_path) as s:
        session_id = paused_session(s)
        with httpx.Client(base_url=s.url, timeout=30) as http:
            http.cookies.set(auth.COOKIE_NAME, auth.cookie_value(s.settings.api_token))  # type: ignore[arg-type]
            page = http.get("/").text
            assert f'data-budget-session="{session_id}"' in page
            assert "/ $5.00" in page
            path = f"/sessions/{session_id}/budget"
            # A foreign page can send the cookie, never the header: refused, nothing changed.
            assert http.post(path, json={"usd": 12}).status_code == 401
            raised = http.post(path, json={"usd": 12}, headers={"x-idlehook-csrf": "1"})
            assert raised.status_code == 200, raised.text
            assert raised.json()["cap_usd"] == 12.0
            assert s.emulator.requests["POST /v1/sessions/{id}"] == 1
            after = http.get("/").text
        assert "/ $12.00" in after
        session = s.client().beta.sessions.retrieve(session_id)
        assert session.budget is not None
        assert session.budget.max_list_cost.amount == "1200"


def test_headless_chromium_shows_the_button(sqlite_url: str, tmp_path: Path) -> None:
    binary = chromium()
    with web_stack(sqlite_url, tmp_path) as s:
        session_id = paused_session(s)
        dom = run_chromium(binary, tmp_path / "profile", "--dump-dom", f"{s.url}/?token={TOKEN}")
        assert dom.returncode == 0, dom.stderr[-2000:]
        assert f'data-budget-session="{session_id}"' in dom.stdout
        assert "Raise budget" in dom.stdout
