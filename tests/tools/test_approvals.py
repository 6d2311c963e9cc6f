"""Tool uses held for confirmation, end to end: decided by policy, by a person over HTTP and the
CLI, or by nobody in time; partial answers leave the rest pending."""

import json
import sys
from pathlib import Path

import httpx
import pytest
import structlog
from sqlmodel import Session
from standardwebhooks import Webhook
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from handlers.config import ApprovalRule, ApprovalSettings, ForwardSettings
from idlehook.cli import main
from store import approvals
from store.models import TrackedSession
from tests.support.servers import serve, wait_for
from tests.tools.stack import SECRET, TOKEN, stack

AUTH = {"authorization": f"Bearer {TOKEN}"}


@pytest.fixture(autouse=True)
def _logging_configured():
    # main() configures logging once per process; keep it off this test's captured stderr.
    structlog.configure(
        logger_factory=structlog.PrintLoggerFactory(sys.__stderr__),
        cache_logger_on_first_use=False,
    )
    yield
    structlog.reset_defaults()


def _denied_text(s, sid: str) -> list[str]:
    return [r.content[0].text for r in s.of_type(sid, "agent.tool_result") if r.is_error]


def test_policy_allows_and_denies_by_tool_and_input(db_url: str, tmp_path: Path) -> None:
    policy = ApprovalSettings(
        rules=[
            ApprovalRule(tools=["bash"], input_pattern=r"rm -rf", action="deny"),
            ApprovalRule(
                tools=["bash"], metadata={"team": "red"}, action="deny", message="not for red"
            ),
            ApprovalRule(tools=["bash"], input_pattern=r"echo", action="allow"),
        ],
        default="ask",
    )
    with stack(db_url, tmp_path, approvals=policy) as s:
        allowed = s.launch("requires_action:2")
        denied = s.launch("requires_action", team="red")
        s.wait_end_turn(allowed)
        s.wait_end_turn(denied)

        assert len(s.of_type(allowed, "user.tool_confirmation")) == 2
        assert _denied_text(s, allowed) == []
        (confirmation,) = s.of_type(denied, "user.tool_confirmation")
        assert confirmation.result == "deny"
        assert _denied_text(s, denied) == ["not for red"]
        assert approvals.list_pending(s.svc.engine) == []
        assert s.streams_opened() == 0


def test_a_person_approves_over_http_and_the_session_resumes(
    sqlite_url: str, tmp_path: Path
) -> None:
    with stack(sqlite_url, tmp_path) as s:
        sid = s.launch("requires_action")
        (pending,) = wait_for(lambda: approvals.list_pending(s.svc.engine), timeout=30)
        assert pending.session_id == sid
        assert pending.tool_name == "bash"
        assert pending.input == {"command": "echo hello"}
        assert pending.tool_use_id == s.blocking(sid)[0]

        url = f"{s.receiver_url}/approvals/{pending.id}"
        assert httpx.post(url, json={"decision": "allow"}).status_code == 401
        bad = httpx.post(url, json={"decision": "maybe"}, headers=AUTH)
        assert bad.status_code == 400
        assert "decision" in bad.json()["message"]
        assert httpx.post(url + "0", json={"decision": "allow"}, headers=AUTH).status_code == 404
        listed = httpx.get(f"{s.receiver_url}/approvals", headers=AUTH).json()["data"]
        assert [a["id"] for a in listed] == [pending.id]

        response = httpx.post(url, json={"decision": "allow"}, headers=AUTH)
        assert response.status_code == 200, response.text
        assert response.json()["decided_by"] == "http"
        s.wait_end_turn(sid)
        again = httpx.post(url, json={"decision": "deny"}, headers=AUTH)
        assert again.status_code == 409
        assert again.json()["decision"] == "allow"
        (confirmation,) = s.of_type(sid, "user.tool_confirmation")
        assert confirmation.result == "allow"


def _config(tmp_path: Path, s) -> Path:
    path = tmp_path / "idlehook.toml"
    path.write_text(
        "\n".join(
            [
                f'database_url = "{s.settings.database_url}"',
                'api_key = "k"',
                f'base_url = "{s.emulator_url}"',
            ]
        )
        + "\n"
    )
    return path


def test_a_person_denies_from_the_cli_and_the_agent_hears_why(
    sqlite_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with stack(sqlite_url, tmp_path) as s:
        sid = s.launch("requires_action")
        (pending,) = wait_for(lambda: approvals.list_pending(s.svc.engine), timeout=30)
        config = str(_config(tmp_path, s))

        assert main(["--config", config, "approvals", "--json"]) == 0
        assert pending.tool_use_id in capsys.readouterr().out
        assert main(["--config", config, "sessions", "--json"]) == 0
        (listed,) = json.loads(capsys.readouterr().out)
        assert (listed["id"], listed["pending_approvals"]) == (sid, 1)
        assert main(["--config", config, "status", "--json"]) == 0
        assert json.loads(capsys.readouterr().out)["pending_approvals"] == 1
        assert main(["--config", config, "approve", sid, "sevt_nope"]) == 1
        code = main(
            ["--config", config, "deny", sid, pending.tool_use_id, "--message", "not today"]
        )
        assert code == 0
        s.wait_end_turn(sid)
        assert _denied_text(s, sid) == ["not today"]
        assert main(["--config", config, "approve", sid, pending.tool_use_id]) == 1


def test_partial_answers_keep_the_rest_pending_until_approved(
    sqlite_url: str, tmp_path: Path
) -> None:
    with stack(sqlite_url, tmp_path) as s:
        sid = s.launch("mixed_action")
        (pending,) = wait_for(lambda: approvals.list_pending(s.svc.engine), timeout=30)
        # The custom tool was answered; the session re-idled waiting on the confirmation only.
        wait_for(lambda: s.blocking(sid) == [pending.tool_use_id], timeout=30)
        assert len(s.of_type(sid, "user.custom_tool_result")) == 1
        assert approvals.count_pending_by_session(s.svc.engine) == {sid: 1}

        response = httpx.post(
            f"{s.receiver_url}/approvals/{pending.id}", json={"decision": "allow"}, headers=AUTH
        )
        assert response.status_code == 200
        s.wait_end_turn(sid)


def test_unanswered_approvals_expire_denied_and_the_session_goes_to_the_reaper(
    db_url: str, tmp_path: Path
) -> None:
    policy = ApprovalSettings(timeout="0s", sweep_seconds=0.2, expired_message="too late")
    with stack(db_url, tmp_path, approvals=policy) as s:
        sid = s.launch("requires_action")
        s.wait_end_turn(sid)
        assert _denied_text(s, sid) == ["too late"]
        approval = approvals.find(s.svc.engine, s.of_type(sid, "agent.tool_use")[0].id)
        assert approval is not None
        assert approval.decided_by == "expiry"
        with Session(s.svc.engine) as db:
            tracked = db.get(TrackedSession, sid)
            assert tracked is not None
            assert tracked.reap_requested_at is not None


def test_asking_a_person_is_forwarded_signed_once(sqlite_url: str, tmp_path: Path) -> None:
    received: list[dict[str, object]] = []

    async def hook(request: Request) -> Response:
        body = await request.body()
        received.append(Webhook(SECRET).verify(body, dict(request.headers)))
        return Response(status_code=204)

    with serve(Starlette(routes=[Route("/hook", hook, methods=["POST"])])) as target:
        forward = ForwardSettings(url=target + "/hook", secret=SECRET)
        with stack(sqlite_url, tmp_path, forward=forward, faults={"duplicate": 1.0}) as s:
            sid = s.launch("requires_action")
            (pending,) = wait_for(lambda: approvals.list_pending(s.svc.engine), timeout=30)
            wait_for(lambda: received, timeout=10)
            wait_for(
                lambda: getattr(approvals.get(s.svc.engine, pending.id), "notified_at", None),
                timeout=10,
            )
            notice = received[0]
            assert notice["type"] == "idlehook.approval_requested"
            assert (notice["approval_id"], notice["session_id"]) == (pending.id, sid)
            assert notice["tool_use_id"] == pending.tool_use_id
            assert len(received) == 1
