"""The whole service on loopback, on SQLite and PostgreSQL: emulator -> signed webhooks ->
receiver -> inbox -> worker -> plugins fetching through the SDK -> files on disk -> reaper.

`idlehook serve` is built by `wiring.service`, exactly as the command builds it.
"""

import asyncio
import base64
import json
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import anthropic
import httpx
import pytest
from sqlmodel import Session, col, select
from standardwebhooks import Webhook

from idlehook import wiring
from store.models import Delivery, HandlerRun, RunState, Source
from tests.support.servers import wait_for
from tests.support.stack import WEBHOOK_PATH as PATH
from tests.support.stack import Running, emulator_and_service

SECRET = "whsec_" + base64.b64encode(b"E" * 32).decode()
TOKEN = "e2e-management-token"


class Stack(Running):
    def launch(self, agent: str, environment: str, script: str, n: int) -> list[str]:
        return [
            self.start_session(agent, environment, f"job {i}", {"emulator_script": script})
            for i in range(n)
        ]

    def runs(self, handler: str) -> list[tuple[str | None, str]]:
        with Session(self.svc.engine) as db:
            rows = db.exec(
                select(Delivery.session_id, HandlerRun.state)
                .join(Delivery, col(Delivery.id) == col(HandlerRun.delivery_id))
                .where(HandlerRun.handler == handler)
            ).all()
        return [(sid, state) for sid, state in rows]

    def unfinished(self) -> int:
        with Session(self.svc.engine) as db:
            rows = db.exec(
                select(HandlerRun).where(
                    col(HandlerRun.state).in_([RunState.PENDING, RunState.RUNNING, RunState.FAILED])
                )
            ).all()
        return len(rows)

    def deliveries(self) -> list[Delivery]:
        with Session(self.svc.engine) as db:
            return list(db.exec(select(Delivery)).all())

    def archived(self, session_id: str) -> bool:
        return (self.settings.results_dir / session_id / "result.json").exists()


@contextmanager
def stack(db_url: str, tmp_path: Path, **faults: Any) -> Iterator[Stack]:
    with emulator_and_service(
        db_url,
        tmp_path,
        secret=SECRET,
        token=TOKEN,
        owner="e2e",
        emulator_config={"faults": faults},
    ) as running:
        yield running.view(Stack)


def test_webhooks_drive_the_plugins_once_despite_duplicates_and_reordering(
    db_url: str, tmp_path: Path
) -> None:
    with stack(db_url, tmp_path, duplicate=0.6, reorder_window=3) as s:
        client = s.client()
        agent, env = s.agent_and_environment("e2e", client)
        finished = s.launch(agent, env, "tools", 4)
        failed = s.launch(agent, env, "terminate", 1)
        waiting = s.launch(agent, env, "requires_action", 1)

        wait_for(lambda: all(s.archived(sid) for sid in finished + failed), timeout=30)
        wait_for(lambda: s.unfinished() == 0 and s.emulator.sender.pending() == 0, timeout=30)

        archive_runs = s.runs("archive")
        for sid in finished + failed:
            assert archive_runs.count((sid, RunState.SUCCEEDED)) == 1
        # Idle with requires_action is not "finished": the default routes leave it alone.
        assert not s.archived(waiting[0])
        assert all(sid != waiting[0] for sid, _ in archive_runs)

        deliveries = s.deliveries()
        assert sum(d.duplicates for d in deliveries) > 0
        assert len({d.event_id for d in deliveries}) == len(deliveries)

        # The transcript is every event, in order, as the API lists it.
        for sid in finished:
            lines = (s.settings.results_dir / sid / "events.jsonl").read_text().splitlines()
            listed = [e.id for e in client.beta.sessions.events.list(sid)]
            assert [json.loads(line)["id"] for line in lines] == listed
            result = json.loads((s.settings.results_dir / sid / "result.json").read_text())
            assert result["stop_reason"] == "end_turn"
            assert result["session_id"] == sid


def test_dropped_webhooks_are_reconciled_once_late_ones_ignored_then_reaped(
    db_url: str, tmp_path: Path
) -> None:
    with stack(db_url, tmp_path, drop_all=True) as s:
        client = s.client()
        agent, env = s.agent_and_environment("e2e", client)
        ids = s.launch(agent, env, "end_turn", 3)

        def idled(sid: str) -> list[dict[str, Any]]:
            return [
                e
                for e in s.emulator.sender.emitted
                if e["data"]["id"] == sid and e["data"]["type"] == "session.status_idled"
            ]

        wait_for(lambda: all(idled(sid) for sid in ids), timeout=30)
        assert not any(s.archived(sid) for sid in ids)  # nothing arrived

        async def sweep() -> Any:
            async with wiring.api_client(s.settings, s.svc.engine) as api:
                return await wiring.reconciler(s.settings, s.svc.engine, api).sweep()

        report = asyncio.run(sweep())
        assert len(report.synthesised) == 3
        wait_for(lambda: all(s.archived(sid) for sid in ids), timeout=30)
        wait_for(lambda: s.unfinished() == 0, timeout=30)

        # Anthropic's late copies arrive after all (signed, real ids): stored, not re-run.
        signer = Webhook(SECRET)
        for sid in ids:
            for event in idled(sid):
                body = json.dumps(event)
                stamp = datetime.now(UTC)
                headers = {
                    "webhook-id": event["id"],
                    "webhook-timestamp": str(int(stamp.timestamp())),
                    "webhook-signature": signer.sign(event["id"], stamp, body),
                    "content-type": "application/json",
                }
                response = httpx.post(s.receiver_url + PATH, content=body, headers=headers)
                assert response.status_code == 204
        wait_for(lambda: len([d for d in s.deliveries() if d.source == Source.WEBHOOK]) >= 3, 10)
        wait_for(lambda: s.unfinished() == 0, timeout=30)
        archive_runs = s.runs("archive")
        for sid in ids:
            assert archive_runs.count((sid, RunState.SUCCEEDED)) == 1

        # And the reaper deletes them, now that their results are saved.
        async def reap() -> Any:
            async with wiring.api_client(s.settings, s.svc.engine) as api:
                policy = wiring.reap_policy(s.settings, idle_for="0s")
                return await wiring.reaper(s.settings, s.svc.engine, api, policy).run()

        reaped = asyncio.run(reap())
        assert reaped.ok
        for sid in ids:
            with pytest.raises(anthropic.NotFoundError):
                client.beta.sessions.retrieve(sid)
