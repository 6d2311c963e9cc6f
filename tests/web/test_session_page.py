"""`GET /sessions/{id}/view`: one session on the page, from the store and the archive only, behind
the page's token, everything an agent or a user wrote escaped. Real HTTP on loopback against the
app `wiring.service` builds."""

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

from idlehook import wiring
from idlehook.settings import Settings
from store import sessions
from store.engine import make_engine
from store.sessions import Launched, SessionUpdate
from tests.handlers.helpers import add_delivery
from tests.support.servers import serve

TOKEN = "session-page-token-1a2b"
AUTH = {"authorization": f"Bearer {TOKEN}"}
SID = "sesn_page0123456789"
T0 = datetime(2026, 4, 1, 9, 0, tzinfo=UTC)


@pytest.fixture
def url(sqlite_url: str, tmp_path: Path) -> Iterator[str]:
    engine = make_engine(sqlite_url, pool_size=1)
    try:
        seen = SessionUpdate(
            status="idle",
            stop_reason="retries_exhausted",
            title="<script>alert('title')</script>",
            metadata={"team": "<b>core</b>", "idlehook_owner": "ops"},
            created_at=T0,
        )
        with engine.begin() as conn:
            sessions.record_launch(
                conn, Launched(SID, owner="ops", route="triage", deadline=None, seen=seen), T0
            )
        add_delivery(engine, "session.status_idled", SID, event_id="wevt_page_idle", now=T0)
    finally:
        engine.dispose()
    folder = tmp_path / "results" / SID
    folder.mkdir(parents=True)
    events = [
        {"type": "user.message", "id": "sevt_1", "content": [{"type": "text", "text": "go"}]},
        {
            "type": "agent.message",
            "id": "sevt_2",
            "content": [{"type": "text", "text": "<img src=x onerror=alert(1)>"}],
        },
        {
            "type": "session.status_idle",
            "id": "sevt_3",
            "stop_reason": {"type": "retries_exhausted"},
        },
    ]
    (folder / "events.jsonl").write_text("".join(json.dumps(e) + "\n" for e in events))
    settings = Settings(
        database_url=sqlite_url,
        results_dir=tmp_path / "results",
        api_key="k",
        base_url="http://127.0.0.1:9",  # never called: the page reads no API
        api_token=TOKEN,
    )
    svc = wiring.service(settings, run_worker=False)
    try:
        with serve(svc.app) as base:
            yield base
    finally:
        svc.engine.dispose()


def test_the_view_shows_the_session_escaped(url: str) -> None:
    view = httpx.get(f"{url}/sessions/{SID}/view", headers=AUTH)
    assert view.status_code == 200
    html = view.text
    assert "idle</span> (retries_exhausted)" in html
    assert "wevt_page_idle" in html
    assert "sevt_2" in html
    assert "3 events from the archived events.jsonl" in html
    # What agents and users wrote is text, never markup.
    assert "<script>alert" not in html
    assert "&lt;script&gt;alert(&#x27;title&#x27;)&lt;/script&gt;" in html
    assert "<img src=x" not in html
    assert "&lt;img src=x onerror=alert(1)&gt;" in html
    assert "team=&lt;b&gt;core&lt;/b&gt;" in html
    assert "idlehook_owner" not in html  # idlehook's own keys stay off the metadata line
    assert "default-src 'none'" in view.headers["content-security-policy"]


def test_the_view_needs_the_token_and_a_known_session(url: str) -> None:
    anonymous = httpx.get(f"{url}/sessions/{SID}/view", follow_redirects=False)
    assert anonymous.status_code == 303
    assert anonymous.headers["location"] == "/login"
    wrong = httpx.get(f"{url}/sessions/{SID}/view", headers={"authorization": "Bearer no"})
    assert wrong.status_code == 303
    assert httpx.get(f"{url}/sessions/sesn_unknown/view", headers=AUTH).status_code == 404
    page = httpx.get(f"{url}/", headers=AUTH)
    assert f'href="/sessions/{SID}/view"' in page.text
