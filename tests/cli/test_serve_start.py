"""`idlehook serve` as an operator starts it: it says where it listens and with what before
it serves, refuses to start with no signing key at all, and `idlehook status` then shows the
requests it refused (counted in memory, stored every few seconds) and the last webhook's age."""

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from tests.reliability.support import REPO, SECRET, base_env, event, free_port, signed
from tests.support.servers import wait_for

SERVE = [sys.executable, "-m", "idlehook.cli", "serve", "--no-worker"]


def _env(tmp_path: Path, sqlite_url: str, **extra: str) -> dict[str, str]:
    env = base_env(tmp_path, sqlite_url)
    env.pop("IDLEHOOK_JSON_LOGS")  # as an operator runs it: JSON only because not a terminal
    env.update(extra)
    return env


def _idlehook(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "idlehook.cli", *args],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )


@contextmanager
def _serving(
    tmp_path: Path, env: dict[str, str], worker: bool = False
) -> Iterator[tuple[str, Path, Path]]:
    """`serve --no-worker` (or with its worker process) on a free port: (its URL, its stdout
    file, its stderr file)."""
    port = free_port()
    out, err = tmp_path / "serve.out", tmp_path / "serve.err"
    command = SERVE if not worker else [a for a in SERVE if a != "--no-worker"]
    with out.open("wb") as o, err.open("wb") as e:
        proc = subprocess.Popen(
            [*command, "--host", "127.0.0.1", "--port", str(port)],
            env=env,
            cwd=REPO,
            stdout=o,
            stderr=e,
            start_new_session=True,
        )
    url = f"http://127.0.0.1:{port}"
    try:

        def ready() -> bool:
            assert proc.poll() is None, err.read_text()
            try:
                return httpx.get(f"{url}/readyz", timeout=2).status_code == 200
            except httpx.HTTPError:
                return False

        wait_for(ready, timeout=30)
        yield url, out, err
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)


def test_serve_says_where_it_listens_before_serving(tmp_path: Path, sqlite_url: str) -> None:
    env = _env(tmp_path, sqlite_url, IDLEHOOK_DATABASE_URL=sqlite_url)
    with _serving(tmp_path, env) as (url, out, err):
        line = out.read_text().strip()
    assert line.startswith(f"idlehook serve: listening on {url}/webhooks/anthropic (webhook path)")
    assert "page at /" in line
    assert "worker process: off" in line
    assert f"database {sqlite_url}" in line
    assert "signing keys: 1 (1 from env, 0 from the store)" in line
    assert SECRET not in line + err.read_text()  # the key is counted, never shown
    # serve keeps its info lines (JSON, not on a terminal): the log of a server.
    assert '"event": "serve.open_files"' in err.read_text()


def test_a_config_warning_is_logged_once_per_process(tmp_path: Path, sqlite_url: str) -> None:
    # A type nothing knows is a warning (new types appear without notice), not a refusal.
    routes = [{"event_types": ["zz.unheard_of"], "handlers": ["log"]}]
    env = _env(tmp_path, sqlite_url, IDLEHOOK_ROUTES=json.dumps(routes))
    with _serving(tmp_path, env, worker=True) as (_, _out, err):
        wait_for(lambda: '"event": "worker.started"' in err.read_text(), timeout=30)
        logged = err.read_text()
    warnings = [line for line in logged.splitlines() if '"event": "config.warning"' in line]
    # serve's own check (before it opens the store), and its worker process's: not three.
    assert len(warnings) == 2, warnings
    assert all("zz.unheard_of" in line for line in warnings)


def test_serve_without_any_signing_key_refuses_to_start(tmp_path: Path, sqlite_url: str) -> None:
    env = _env(tmp_path, sqlite_url)
    del env["ANTHROPIC_WEBHOOK_SIGNING_KEY"]
    started = time.monotonic()
    done = _idlehook(env, "serve", "--port", str(free_port()))
    assert done.returncode == 2
    assert done.stdout == ""
    [line] = done.stderr.splitlines()
    assert line.startswith("error: no webhook signing key")
    assert "ANTHROPIC_WEBHOOK_SIGNING_KEY=whsec_..." in line
    assert "idlehook keys add" in line
    assert time.monotonic() - started < 30

    # A key kept in the store is enough: it is what the receiver verifies with.
    key_env = {**env, "IDLEHOOK_JSON_LOGS": "true"}
    assert _idlehook(key_env, "keys", "add", SECRET).returncode == 0
    with _serving(tmp_path, env) as (_, out, _err):
        assert "signing keys: 1 (0 from env, 1 from the store)" in out.read_text()


def test_status_shows_refused_requests_and_the_last_webhook(
    tmp_path: Path, sqlite_url: str
) -> None:
    env = _env(tmp_path, sqlite_url)
    with _serving(tmp_path, env) as (url, _, _):
        hook = f"{url}/webhooks/anthropic"
        body, headers = signed(event("wevt_status_1", "sesn_status"))
        assert httpx.post(hook, content=body, headers=headers).status_code == 204
        forged, forged_headers = signed(
            event("wevt_forged", "sesn_x"), secret="whsec_" + "QUFB" * 11
        )
        for _ in range(3):
            assert httpx.post(hook, content=forged, headers=forged_headers).status_code == 401
        assert httpx.post(hook, content=b"{}", headers={}).status_code in (400, 401)

        def refused() -> dict[str, object] | None:
            report = json.loads(_idlehook(env, "status", "--json").stdout)
            return report if report["rejections"]["total"] >= 4 else None

        # Stored every couple of seconds by the running receiver, not when it stops.
        report = wait_for(refused, timeout=20, interval=0.5)
    assert isinstance(report, dict)
    by_reason = {(r["status"], r["reason"]): r for r in report["rejections"]["by_reason"]}
    assert [k for k in by_reason if k[0] == 401], by_reason
    assert sum(r["total"] for r in by_reason.values()) == 4
    assert report["rejections"]["last_hour"] == 4
    webhooks = report["webhooks"]
    assert webhooks["last_received_at"] is not None
    assert 0 <= webhooks["last_received_seconds_ago"] < 60
    assert webhooks["silence_alarm"] is False

    text = _idlehook(env, "status")
    assert text.returncode == 0, text.stderr
    assert text.stderr == ""
    assert "Rejected webhook requests: 4 in the last hour, 4 in all" in text.stdout
    assert "401" in text.stdout
    assert "Last webhook received: " in text.stdout
    assert "s ago (" in text.stdout
