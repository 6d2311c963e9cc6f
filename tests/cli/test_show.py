"""`idlehook show` and `approve ID`, run as processes against the whole service (the emulator
sending signed webhooks, the worker routing, archiving and holding tool calls) on SQLite; and the
session view on the operator page."""

import json
from pathlib import Path

import httpx
import pytest

from store import approvals
from store.sessions import SessionFilter, list_tracked
from tests.cli.proc import config_file, idlehook, stack_config
from tests.support.servers import wait_for
from tests.tools.stack import TOKEN, Stack

AUTH = {"authorization": f"Bearer {TOKEN}"}


def _event_reads(s: Stack) -> int:
    return sum(
        n for key, n in s.emulator.requests.items() if key.startswith("GET ") and "/events" in key
    )


def _archived(s: Stack, sid: str) -> bool:
    return (s.settings.results_dir / sid / "events.jsonl").exists()


@pytest.mark.timeout(300)  # a fresh interpreter per command
def test_show_a_finished_session_from_the_store_and_its_archive(s: Stack, tmp_path: Path) -> None:
    sid = s.launch("end_turn", team="core")
    wait_for(lambda: _archived(s, sid), timeout=30)
    config = stack_config(s, tmp_path)
    reads = _event_reads(s)

    out = idlehook(config, "show", sid)
    assert out.returncode == 0, out.stderr
    text = out.stdout
    assert f"{sid}  idle (end_turn)" in text
    assert "owner tools, launched by idlehook" in text
    assert "team=core" in text
    assert "result.json yes, events.jsonl yes" in text
    assert "session.status_idled" in text  # a delivery
    assert "end_turn" in text
    assert "archived events.jsonl" in text
    assert "API reads session" in text
    # The transcript came from the archive: not one event read from the API.
    assert _event_reads(s) == reads

    body = json.loads(idlehook(config, "show", sid, "--json").stdout)
    assert body["status_label"] == "idle (end_turn)"
    assert body["user_metadata"] == {"emulator_script": "end_turn", "team": "core"}
    assert body["metadata"]["idlehook_owner"] == "tools"
    assert (body["archive"]["result_json"], body["archive"]["events_jsonl"]) == (True, True)
    assert body["transcript"]["source"] == "archive"
    assert body["transcript"]["stop_reason"] == "end_turn"
    assert body["api_reads"] == ["session"]
    [idled] = [d for d in body["deliveries"] if d["event_type"] == "session.status_idled"]
    assert idled["routing"] == "to archive, log"
    runs = {(r["handler"], r["state"]) for r in body["handler_runs"]}
    assert {("archive", "succeeded"), ("_route", "succeeded")} <= runs
    # The model the tokens went to, from the one session read.
    assert [m["model"] for m in body["cost"]["by_model"]] == ["claude-opus-4-7"]
    assert body["cost"]["source"] == "api"

    offline = json.loads(idlehook(config, "show", sid, "--json", "--no-api").stdout)
    assert offline["api_reads"] == []
    assert offline["cost"]["source"] == "store"
    assert offline["transcript"]["source"] == "archive"


@pytest.mark.timeout(300)  # a fresh interpreter per command
def test_a_held_tool_use_is_shown_and_approved_by_its_number(s: Stack, tmp_path: Path) -> None:
    sid = s.launch("requires_action")
    (pending,) = wait_for(lambda: approvals.list_pending(s.svc.engine), timeout=30)
    config = stack_config(s, tmp_path)

    body = json.loads(idlehook(config, "show", sid, "--json").stdout)
    assert body["status_label"] == "idle (requires_action)"
    [held] = body["approvals"]
    assert (held["id"], held["tool_use_id"], held["state"]) == (
        pending.id,
        pending.tool_use_id,
        "pending",
    )
    listing = idlehook(config, "approvals")
    assert pending.tool_use_id in listing.stdout
    assert sid in listing.stdout

    refused = idlehook(config, "approve", "first")
    assert refused.returncode == 2
    assert "no approval id" in refused.stderr
    assert idlehook(config, "approve", str(pending.id + 100)).returncode == 1

    out = idlehook(config, "approve", str(pending.id))
    assert out.returncode == 0, out.stderr
    assert f"allow: {pending.tool_use_id}" in out.stdout
    s.wait_end_turn(sid)
    again = idlehook(config, "deny", str(pending.id), "-m", "too late")
    assert again.returncode == 1
    assert "already decided: allow by cli" in again.stderr


@pytest.mark.timeout(300)  # a fresh interpreter per command
def test_an_unknown_session_is_looked_up_through_the_api(s: Stack, tmp_path: Path) -> None:
    sid = s.launch("end_turn")
    wait_for(lambda: _archived(s, sid), timeout=30)
    # Another store (an empty one) and another results dir: idlehook never heard of it there.
    other = config_file(
        tmp_path / "other.toml",
        f"sqlite:///{tmp_path / 'other.db'}",
        s.emulator_url,
        results_dir=str(tmp_path / "elsewhere"),
    )
    reads = _event_reads(s)
    body = json.loads(idlehook(other, "show", sid, "--json", "--events", "3").stdout)
    assert (body["found"], body["tracked"]) == (True, False)
    assert body["status_label"] == "idle (end_turn)"
    assert body["api_reads"] == ["session", "events"]
    assert body["transcript"]["source"] == "api"
    assert len(body["transcript"]["latest"]) == 3
    assert _event_reads(s) == reads + 1  # one page, one call

    missing = idlehook(other, "show", "sesn_nothing_here")
    assert missing.returncode == 1
    assert "error: no session sesn_nothing_here" in missing.stderr
    offline = idlehook(other, "show", sid, "--no-api")
    assert offline.returncode == 1
    assert _event_reads(s) == reads + 1


def test_the_page_links_each_session_to_its_view(s: Stack) -> None:
    sid = s.launch("retries_exhausted")
    gave_up = SessionFilter(stop_reason=["retries_exhausted"])
    wait_for(lambda: list_tracked(s.svc.engine, gave_up), timeout=30)
    page = httpx.get(s.receiver_url + "/", headers=AUTH)
    assert page.status_code == 200
    assert f'href="/sessions/{sid}/view"' in page.text

    url = f"{s.receiver_url}/sessions/{sid}/view"
    refused = httpx.get(url, follow_redirects=False)
    assert refused.status_code == 303
    assert refused.headers["location"] == "/login"
    view = httpx.get(url, headers=AUTH)
    assert view.status_code == 200
    assert sid in view.text
    assert "retries_exhausted" in view.text
    assert "Deliveries" in view.text
    assert "session.status_idled" in view.text
    assert "nonce-" in view.headers["content-security-policy"]
    assert httpx.get(f"{s.receiver_url}/sessions/sesn_nope/view", headers=AUTH).status_code == 404
