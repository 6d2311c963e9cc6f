"""Every outcome handled as the API bills: the whole service on loopback (SQLite and
PostgreSQL), the default routes, the reaper, and the emulator's billing ledger."""

import asyncio
import base64
import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from emulator.control import billing_report
from handlers.config import RouteRule
from idlehook import wiring
from idlehook.settings import ReaperSettings
from sessions.reaper import ReapReport
from store.models import ReaperActionKind
from store.sessions import unsaved_outcomes
from tests.support.servers import wait_for
from tests.support.stack import Running, emulator_and_service

SECRET = "whsec_" + base64.b64encode(b"O" * 32).decode()
TOKEN = "outcomes-management-token"
LONG_RUN = "100000"  # emulated seconds: a run that would go on all day


class Stack(Running):
    def result(self, session_id: str) -> dict[str, Any] | None:
        path = self.settings.results_dir / session_id / "result.json"
        return json.loads(path.read_text()) if path.exists() else None

    def running_seconds(self, session_id: str) -> float:
        rows = {r["session_id"]: r for r in billing_report(self.emulator)["sessions"]}
        return float(rows[session_id]["running_seconds"])

    def live(self) -> set[str]:
        return {sid for sid, rec in self.emulator.store.sessions.items() if not rec.deleted}

    def reap(self, *, later: timedelta = timedelta(0), **policy: Any) -> ReapReport:
        async def run() -> ReapReport:
            async with wiring.api_client(self.settings, self.svc.engine) as client:
                chosen = replace(wiring.reap_policy(self.settings), **policy)
                archive = wiring.archiver(self.settings, self.svc.engine, client)
                reaper = wiring.reaper(self.settings, self.svc.engine, client, chosen, archive)
                reaper.now = lambda: datetime.now(UTC) + later
                reaper.interrupt_wait_seconds = 10
                return await reaper.run()

        return asyncio.run(run())


@contextmanager
def stack(db_url: str, tmp_path: Path, **reaper: Any) -> Iterator[Stack]:
    with emulator_and_service(
        db_url,
        tmp_path,
        secret=SECRET,
        token=TOKEN,
        owner="outcomes",
        reaper=ReaperSettings(**reaper),
    ) as running:
        yield running.view(Stack)


@pytest.mark.parametrize(
    ("script", "outcome"),
    [
        ("end_turn", "end_turn"),
        ("retries_exhausted", "retries_exhausted"),
        ("budget_reached", "budget_reached"),
        ("refusal", "refusal"),
        ("terminate", "terminated"),
    ],
)
def test_with_no_routes_configured_every_outcome_is_archived(
    db_url: str, tmp_path: Path, script: str, outcome: str
) -> None:
    with stack(db_url, tmp_path) as s:
        agent, env = s.agent_and_environment("outcomes")
        sid = s.start_session(agent, env, "go", {"emulator_script": script})
        result = wait_for(lambda: s.result(sid), timeout=30)
        assert result["outcome"] == outcome
        assert result["billing_model"] == "running"
        assert result["token_usd"] is not None


def test_a_runaway_is_interrupted_archived_as_such_reaped_and_stops_billing(
    db_url: str, tmp_path: Path
) -> None:
    with stack(db_url, tmp_path, idle_for="0s") as s:
        agent, env = s.agent_and_environment("outcomes")
        sid = s.start_session(agent, env, "go", {"emulator_run_seconds": LONG_RUN})
        wait_for(lambda: s.emulator.store.sessions[sid].status == "running")

        report = s.reap(later=timedelta(hours=3), max_running=timedelta(hours=1))

        actions = [(o.action, o.reason) for o in report.outcomes]
        assert actions[0] == (ReaperActionKind.INTERRUPTED, "max_running")
        wait_for(lambda: s.result(sid), timeout=30)
        if sid in s.live():  # the idle webhook's handlers were still busy: the next run
            wait_for(lambda: not s.reap().outcomes or sid not in s.live(), timeout=30)
        assert sid not in s.live()
        result = s.result(sid)
        assert result is not None
        assert (result["outcome"], result["interrupted_by"], result["interrupt_reason"]) == (
            "interrupted",
            "idlehook",
            "max_running",
        )
        assert result["stop_reason"] == "end_turn"  # what the API itself says
        billed = s.running_seconds(sid)
        asyncio.run(asyncio.sleep(0.2))  # ten emulated seconds
        assert s.running_seconds(sid) == billed
        report_row = next(
            r for r in billing_report(s.emulator)["sessions"] if r["session_id"] == sid
        )
        # The emulator knows how long the script would have run: the saving is measured.
        assert report_row["avoided_running_seconds"] > 3600


def test_a_finished_session_survives_the_default_reap_and_saves_nothing_to_delete(
    db_url: str, tmp_path: Path
) -> None:
    with stack(db_url, tmp_path) as s:  # the defaults: idle_for 24h, archive first
        agent, env = s.agent_and_environment("outcomes")
        sid = s.start_session(agent, env, "go", {"emulator_script": "end_turn"})
        wait_for(lambda: s.result(sid), timeout=30)

        kept = s.reap()
        assert kept.outcomes == []
        assert sid in s.live()

        # A day later it goes, as clean-up: under the documented billing it cost nothing idle.
        gone = s.reap(later=timedelta(hours=25))
        assert [(o.session_id, o.action, o.reason) for o in gone.outcomes] == [
            (sid, ReaperActionKind.DELETED, "handled")
        ]
        assert (gone.billing_model, gone.saving_usd_per_hour) == ("running", 0.0)
        assert sid not in s.live()


def test_an_outcome_no_route_saves_is_reported_then_archived_before_it_is_reaped(
    db_url: str, tmp_path: Path
) -> None:
    only_finished = [
        RouteRule(event_types=["session.status_idled"], stop_reasons=["end_turn"], handlers=["log"])
    ]
    with emulator_and_service(
        db_url,
        tmp_path,
        secret=SECRET,
        token=TOKEN,
        owner="outcomes",
        routes=only_finished,
        reaper=ReaperSettings(),
    ) as running:
        s = running.view(Stack)
        agent, env = s.agent_and_environment("outcomes")
        sid = s.start_session(agent, env, "go", {"emulator_script": "retries_exhausted"})

        def unsaved_metric() -> float | None:
            text = httpx.get(s.receiver_url + "/metrics", timeout=10).text
            for line in text.splitlines():
                if line.startswith("idlehook_unsaved_outcomes "):
                    return float(line.split()[1])
            return None

        wait_for(lambda: unsaved_metric() == 1.0, timeout=30)
        count, ids = unsaved_outcomes(s.svc.engine)
        assert (count, ids) == (1, [sid])
        assert s.result(sid) is None

        # Kept for idle_for like any session, then archived (archive_before_delete), then gone.
        assert s.reap().outcomes == []
        gone = s.reap(later=timedelta(hours=25))
        assert [(o.action, o.reason) for o in gone.outcomes] == [
            (ReaperActionKind.ARCHIVED, "idle_past_grace"),
            (ReaperActionKind.DELETED, "idle_past_grace"),
        ]
        result = s.result(sid)
        assert result is not None
        assert result["outcome"] == "retries_exhausted"
        assert unsaved_outcomes(s.svc.engine)[0] == 0
