"""The operator page in headless Chromium, with real data: sessions run through the emulator
and the service, a reaper pass, a pending approval. Checks the DOM and a screenshot.

Chromium must be installed (CI installs Debian's `chromium`); a missing browser fails the test.
Only `IDLEHOOK_SKIP_BROWSER=1` skips it, for machines that cannot have one.
"""

import asyncio
import shutil
import subprocess
from datetime import timedelta
from pathlib import Path

import pytest

from idlehook import wiring
from idlehook.settings import env_flag
from store.models import utcnow
from tests.web import png
from tests.web.stack import TOKEN, web_stack

WIDTH, HEIGHT = 1280, 1600


def chromium() -> str:
    if env_flag("IDLEHOOK_SKIP_BROWSER"):
        pytest.skip("IDLEHOOK_SKIP_BROWSER=1")
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        pytest.fail("chromium is not installed (apt-get install -y chromium)")
    return found


def run_chromium(binary: str, profile: Path, *args: str) -> subprocess.CompletedProcess[str]:
    command = [
        binary,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        "--hide-scrollbars",
        f"--user-data-dir={profile}",
        f"--window-size={WIDTH},{HEIGHT}",
        *args,
    ]
    return subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)


def add_pending_approval(engine, session_id: str) -> None:
    from store import approvals  # the approvals feature; the page shows it when present

    approvals.record(
        engine,
        session_id=session_id,
        tool_use_id="toolu_web_0001",
        tool_name="deploy_to_prod",
        input={"service": "billing", "note": "<b>not bold</b>"},
        agent_id=None,
        now=utcnow(),
        expires_at=utcnow() + timedelta(hours=1),
    )


def test_page_renders_real_data_in_headless_chromium(sqlite_url: str, tmp_path: Path) -> None:
    binary = chromium()
    with web_stack(sqlite_url, tmp_path) as s:
        finished = s.launch("end_turn", 3)
        s.settle(archived=3)

        async def reap() -> None:
            async with wiring.api_client(s.settings, s.svc.engine) as api:
                policy = wiring.reap_policy(s.settings, idle_for="0s")
                await wiring.reaper(s.settings, s.svc.engine, api, policy).run(dry_run=True)

        asyncio.run(reap())
        add_pending_approval(s.svc.engine, finished[0])

        url = f"{s.url}/?token={TOKEN}"
        dom = run_chromium(binary, tmp_path / "profile-dom", "--dump-dom", url)
        assert dom.returncode == 0, dom.stderr[-2000:]
        html = dom.stdout
        for sid in finished:
            assert sid in html
        assert 'id="chart"' in html
        assert "<rect" in html
        assert "Pending approvals" in html
        assert "deploy_to_prod" in html
        assert 'data-decision="allow"' in html
        assert 'data-decision="deny"' in html
        assert "&lt;b&gt;not bold&lt;/b&gt;" in html  # agent-written input stays text
        assert "would delete" in html or "deleted" in html  # the reaper's dry run
        assert TOKEN not in html

        shot = tmp_path / "page.png"
        result = run_chromium(binary, tmp_path / "profile-shot", f"--screenshot={shot}", url)
        assert result.returncode == 0, result.stderr[-2000:]
        assert shot.exists()
        image = png.decode(shot.read_bytes())
        assert (image.width, image.height) == (WIDTH, HEIGHT)
        # A blank or error page has a handful of colours; text, tables and the chart have many.
        assert len(image.colours(step=4)) > 20


def test_page_without_the_cookie_is_the_login_form(sqlite_url: str, tmp_path: Path) -> None:
    binary = chromium()
    with web_stack(sqlite_url, tmp_path) as s:
        dom = run_chromium(binary, tmp_path / "profile", "--dump-dom", s.url + "/")
        assert dom.returncode == 0, dom.stderr[-2000:]
        assert 'name="token"' in dom.stdout
        assert "Sessions" not in dom.stdout
