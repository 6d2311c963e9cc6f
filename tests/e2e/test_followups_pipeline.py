"""Follow-ups through the whole service, on SQLite and PostgreSQL: a finished session takes a
second, third and fourth turn (`POST /sessions/{id}/messages`, `idlehook send`, `Launcher.send`),
the emulator runs each, and the webhook -> worker -> archive path archives each, keeping every
turn's result.
"""

import asyncio
import base64
import json
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from sqlmodel import Session, col, select

from idlehook import wiring
from idlehook.cli import main
from sessions.followups import FollowUpResult
from sessions.metadata import DEADLINE_KEY
from sessions.session_view import parse_rfc3339, saved_since
from store.models import Delivery, HandlerRun
from store.sessions import SessionStore
from tests.support import cli
from tests.support.servers import wait_for
from tests.support.stack import Running, emulator_and_service

SECRET = "whsec_" + base64.b64encode(b"F" * 32).decode()
TOKEN = "followups-e2e-token"
AUTH = {"authorization": f"Bearer {TOKEN}"}

_logging_back_to_defaults = cli.logging_back_to_defaults


class Stack(Running):
    def launch(self, message: str, **extra: Any) -> str:
        agent, env = self.agent_and_environment("followups")
        body = {"agent": agent, "environment": env, "message": message, **extra}
        response = httpx.post(self.receiver_url + "/sessions", json=body, headers=AUTH, timeout=30)
        assert response.status_code == 201, response.text
        return str(response.json()["session_id"])

    def follow_up(self, session_id: str, **body: Any) -> httpx.Response:
        url = f"{self.receiver_url}/sessions/{session_id}/messages"
        return httpx.post(url, json=body, headers=AUTH, timeout=30)

    def folder(self, session_id: str) -> Path:
        return self.settings.results_dir / session_id

    def turn(self, session_id: str, n: int) -> dict[str, Any] | None:
        path = self.folder(session_id) / "turns" / f"{n:04d}-result.json"
        return json.loads(path.read_text()) if path.exists() else None

    def archived_turn(self, session_id: str, n: int) -> dict[str, Any]:
        """Turn n's result, once archived and marked saved on the tracked session."""

        def done() -> dict[str, Any] | None:
            result = self.turn(session_id, n)
            if result is None or self.archive_runs(session_id) < n:
                return None
            return result

        return wait_for(done, timeout=30)  # type: ignore[no-any-return]

    def archive_runs(self, session_id: str) -> int:
        with Session(self.svc.engine) as db:
            rows = db.exec(
                select(HandlerRun.state)
                .join(Delivery, col(Delivery.id) == col(HandlerRun.delivery_id))
                .where(HandlerRun.handler == "archive", Delivery.session_id == session_id)
            ).all()
        return sum(1 for state in rows if state == "succeeded")

    def user_messages(self, session_id: str) -> list[str]:
        return [
            e["content"][0]["text"]
            for e in self.emulator.store.session(session_id).events
            if e["type"] == "user.message"
        ]

    def rested_at(self, session_id: str) -> datetime:
        """processed_at of the session's latest status event: what the reaper's guard reads."""
        idles = [
            e
            for e in self.client().beta.sessions.events.list(session_id)
            if e.type == "session.status_idle"
        ]
        assert idles[-1].processed_at is not None
        return idles[-1].processed_at


@contextmanager
def stack(db_url: str, tmp_path: Path) -> Iterator[Stack]:
    with emulator_and_service(
        db_url,
        tmp_path,
        secret=SECRET,
        token=TOKEN,
        owner="e2e-followups",
        create_rpm=60_000,
        read_rpm=60_000,
    ) as running:
        yield running.view(Stack)


def test_a_finished_session_takes_follow_ups_and_every_turn_is_archived(
    db_url: str, tmp_path: Path
) -> None:
    with stack(db_url, tmp_path) as s:
        session_id = s.launch("turn one #script:long:2", deadline="2h")
        first = s.archived_turn(session_id, 1)
        assert (first["stop_reason"], first["final_message"]) == ("end_turn", "Part 2.")
        sessions = SessionStore(s.svc.engine)
        after_turn_one = sessions.get(session_id)
        assert after_turn_one is not None
        assert after_turn_one.result_captured_at is not None

        # Turn 2 over HTTP; the integration retries its hook with the same key: one message.
        body = {"message": "turn two #script:long:3", "idempotency_key": "hook-2"}
        sent = s.follow_up(session_id, **body)
        assert sent.status_code == 201, sent.text
        assert s.follow_up(session_id, **body).status_code == 200
        moved = parse_rfc3339(s.client().beta.sessions.retrieve(session_id).metadata[DEADLINE_KEY])
        assert moved is not None
        assert abs((moved - (datetime.now(UTC) + timedelta(hours=2))).total_seconds()) < 10
        second = s.archived_turn(session_id, 2)
        assert (second["stop_reason"], second["final_message"]) == ("end_turn", "Part 3.")
        # The reaper's guard: turn 1's save does not cover turn 2; turn 2's own save does.
        rested = s.rested_at(session_id)
        assert not saved_since(after_turn_one, rested)
        assert saved_since(sessions.get(session_id), rested)

        # Turn 3 through `idlehook send`, on the same store.
        config = tmp_path / "idlehook.toml"
        config.write_text(
            f'database_url = "{db_url}"\n'
            f'base_url = "{s.emulator_url}"\n'
            'api_key = "k"\n'
            'owner = "e2e-followups"\n'
        )
        args = ["--config", str(config), "send", session_id, "--message", "turn three"]
        assert main([*args, "--idempotency-key", "cli-3"]) == 0
        third = s.archived_turn(session_id, 3)
        assert third["final_message"] == "Done."

        # Turn 4 through the Python API.
        async def python_api() -> FollowUpResult:
            async with wiring.api_client(s.settings, s.svc.engine, max_retries=0) as client:
                launcher = wiring.launcher(s.settings, s.svc.engine, client)
                return await launcher.send(session_id, "turn four #script:long:4")

        assert asyncio.run(python_api()).new
        fourth = s.archived_turn(session_id, 4)
        assert fourth["final_message"] == "Part 4."

        # Every turn kept; result.json is the latest; events.jsonl the whole transcript.
        folder = s.folder(session_id)
        assert sorted(p.name for p in (folder / "turns").iterdir()) == [
            "0001-result.json",
            "0002-result.json",
            "0003-result.json",
            "0004-result.json",
        ]
        assert [s.turn(session_id, n)["final_message"] for n in (1, 2, 3, 4)] == [  # type: ignore[index]
            "Part 2.",
            "Part 3.",
            "Done.",
            "Part 4.",
        ]
        assert json.loads((folder / "result.json").read_text()) == fourth
        events = [json.loads(line) for line in (folder / "events.jsonl").read_text().splitlines()]
        texts = [e["content"][0]["text"] for e in events if e["type"] == "user.message"]
        assert texts == [
            "turn one #script:long:2",
            "turn two #script:long:3",
            "turn three",
            "turn four #script:long:4",
        ]
        assert s.user_messages(session_id) == texts
        assert s.emulator.requests["GET /v1/sessions/{id}/events/stream"] == 0
