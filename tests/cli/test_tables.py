"""No id is ever cut: every command that prints a table, run as a process at 80 columns (what a
small terminal gives rich) and piped, prints each session id, tool use id, launch key and event
id whole on one line (folding, when it happens, is for the other columns)."""

import base64
import json
import subprocess
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from store import approvals
from store.engine import make_engine
from store.runs import RunStore
from tests.cli.proc import config_file, idlehook, stack_config
from tests.handlers.helpers import add_delivery
from tests.support.servers import wait_for
from tests.tools.stack import Stack

WIDTHS = (80, None)  # a small terminal, and piped
LONG_KEY = "nightly-triage-" + "x" * 48  # wider than any column 80 columns leave it


def assert_whole(out: subprocess.CompletedProcess[str], ids: Iterable[str], what: str) -> None:
    assert out.returncode == 0, f"{what}: {out.stderr}"
    lines = out.stdout.splitlines()
    for wanted in ids:
        assert any(wanted in line for line in lines), f"{what}: {wanted} cut in\n{out.stdout}"


def each_width(config: Path, ids: Iterable[str], *args: str) -> str:
    """Run the command at each width; the piped run's output."""
    wanted = list(ids)
    piped = ""
    for columns in WIDTHS:
        out = idlehook(config, *args, columns=columns)
        assert_whole(out, wanted, f"{' '.join(args)} at {columns or 'piped'}")
        piped = out.stdout
    return piped


def _finished(s: Stack) -> str:
    sid = s.launch("end_turn", team="core", ticket="T-" + "9" * 30)
    wait_for(lambda: (s.settings.results_dir / sid / "events.jsonl").exists(), timeout=30)
    return sid


# Many processes, each a fresh interpreter: slow on a busy machine.
@pytest.mark.timeout(400)
def test_sessions_approvals_and_show(s: Stack, tmp_path: Path) -> None:
    config = stack_config(s, tmp_path, owner="tools")
    held = s.launch("requires_action")
    (pending,) = wait_for(lambda: approvals.list_pending(s.svc.engine), timeout=30)
    done = _finished(s)

    each_width(config, [done, held], "sessions")
    each_width(config, [done], "sessions", "--metadata", "team=core", "--all")
    each_width(config, [pending.tool_use_id, held], "approvals")
    # The deliveries' webhook ids and the transcript's event ids, from the archive.
    body = json.loads(idlehook(config, "show", done, "--json", "--no-api").stdout)
    event_ids = [d["event_id"] for d in body["deliveries"]]
    event_ids += [e["id"] for e in body["transcript"]["latest"]]
    assert len(event_ids) > 4
    each_width(config, [done, *event_ids], "show", done, "--no-api")
    each_width(config, [held, pending.tool_use_id], "show", held, "--no-api")


@pytest.mark.timeout(400)
def test_launch_keys_too_wide_for_the_terminal_stay_whole(s: Stack, tmp_path: Path) -> None:
    config = stack_config(s, tmp_path, owner="tools")
    agent, env = s.agent_and_environment("tables")
    batch = tmp_path / "jobs.jsonl"
    keys = [f"{LONG_KEY}-{n}" for n in range(2)]
    lines = [
        {"agent": agent, "environment": env, "message": "hi", "idempotency_key": k} for k in keys
    ]
    batch.write_text("".join(json.dumps(line) + "\n" for line in lines))
    drained = idlehook(config, "start", "--batch", str(batch), "--drain", columns=80)
    assert_whole(drained, keys, "start --batch --drain at 80")
    created = json.loads(idlehook(config, "launches", "--json").stdout)["launches"]
    launched = [x["session_id"] for x in created if x["idempotency_key"] in keys]
    assert len(launched) == 2
    # The key and the session id alone are wider than 80 columns: the line goes wider.
    each_width(config, [*keys, *launched], "launches")


@pytest.mark.timeout(400)
def test_the_reapers_and_a_reroutes_tables(s: Stack, tmp_path: Path) -> None:
    config = stack_config(s, tmp_path, owner="tools")
    done = _finished(s)
    each_width(config, [done], "reap", "--dry-run", "--all")
    each_width(config, [done], "reroute", done, "--dry-run")


def test_status_dead_letters(sqlite_url: str, tmp_path: Path) -> None:
    engine = make_engine(sqlite_url, pool_size=1)
    now = datetime.now(UTC)
    session = "sesn_" + "D" * 40
    event = "wevt_" + "E" * 40
    error = "RuntimeError: " + " ".join(f"word{n}" for n in range(40))
    try:
        store = RunStore(engine)
        add_delivery(engine, "session.status_terminated", session, event_id=event, now=now)
        [run] = store.claim("w", now, timedelta(seconds=30))
        store.fail(run.id, "w", now, error, None, 1.0, attempt=run.attempts)
    finally:
        engine.dispose()
    config = config_file(tmp_path / "idlehook.toml", sqlite_url, "http://127.0.0.1:9")
    piped = each_width(config, [event, session], "status")
    assert error in piped  # folded on a terminal, never cut


@pytest.mark.timeout(400)
def test_keys_and_prune(sqlite_url: str, tmp_path: Path) -> None:
    config = config_file(tmp_path / "idlehook.toml", sqlite_url, "http://127.0.0.1:9")
    secret = "whsec_" + base64.b64encode(b"K" * 32).decode()
    out = idlehook(config, "keys", "add", secret)
    assert out.returncode == 0, out.stderr
    listed = json.loads(idlehook(config, "keys", "list", "--json").stdout)
    fingerprints = [k["fingerprint"] for k in listed]
    each_width(config, fingerprints, "keys", "list")
    each_width(config, ["unrecognised_deliveries", "handler_runs"], "db", "prune", "--dry-run")
