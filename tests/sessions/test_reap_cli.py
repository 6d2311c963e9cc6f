"""`idlehook reap` / `idlehook reconcile` end to end (TOML config, emulator, SQLite), and the
reaper archiving with the archive plugin's own code before it deletes."""

import asyncio
import json
import sys
from datetime import timedelta

import pytest
import structlog
from sqlmodel import Session

from idlehook import wiring
from idlehook.cli import main
from idlehook.settings import Settings
from sessions.reap_policy import ReapPolicy
from sessions.reaper import Reaper, ReapReport
from store import reaper_actions
from store.engine import make_engine
from store.models import ReaperActionKind, TrackedSession
from tests.sessions.reaping import OWNER, emulator, live_ids, new_session, track


@pytest.fixture(autouse=True)
def _logging_configured():
    # As a process would have it before running a command, but uncached and onto the real
    # stderr: main() must not bind loggers to this test's captured (later closed) stderr.
    structlog.configure(
        logger_factory=structlog.PrintLoggerFactory(sys.__stderr__),
        cache_logger_on_first_use=False,
    )
    yield
    structlog.reset_defaults()


def _config(tmp_path, db_url, api, **reaper):
    lines = [
        f'database_url = "{db_url}"',
        f'results_dir = "{tmp_path / "results"}"',
        'api_key = "sk-test"',
        f'base_url = "{api.url}"',
        f'owner = "{OWNER}"',
        "read_rpm = 6000",
        "[reaper]",
        *(f"{k} = {json.dumps(v)}" for k, v in reaper.items()),
        "[reconcile]",
        "settle_seconds = 0",
    ]
    path = tmp_path / "idlehook.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


def _sessions(api, engine, count, saved=True):
    async def make():
        async with api.client() as client:
            return [await new_session(api, client) for _ in range(count)]

    made = asyncio.run(make())
    for s in made:
        track(engine, s.id, saved=saved)
    return made


def test_reap_dry_run_then_real_run(tmp_path, sqlite_url, capsys):
    engine = make_engine(sqlite_url, pool_size=1)
    with emulator() as api:
        handled, unsaved = _sessions(api, engine, 2)
        with Session(engine) as db:  # the second has not been archived yet
            row = db.get(TrackedSession, unsaved.id)
            assert row is not None
            row.result_captured_at = row.transcript_saved_at = None
            db.add(row)
            db.commit()
        config = _config(tmp_path, sqlite_url, api, archive_before_delete=False)

        assert (
            main(["--config", str(config), "reap", "--dry-run", "--json", "--idle-for", "0s"]) == 0
        )
        dry = json.loads(capsys.readouterr().out)
        assert dry["dry_run"] is True
        assert {(a["session_id"], a["action"], a["reason"]) for a in dry["actions"]} == {
            (handled.id, "would_delete", "handled"),
            (unsaved.id, "skipped", "result_not_saved"),
        }
        # Idle sessions accrue no runtime as the API bills: deleting them is clean-up.
        assert (dry["billing_model"], dry["saving_usd_per_hour"]) == ("running", 0.0)
        assert {handled.id, unsaved.id} <= live_ids(api)

        assert main(["--config", str(config), "reap", "--idle-for", "0s"]) == 0
        table = capsys.readouterr().out
        for shown in ("deleted", "result_not_saved", "$0.0000/hour", "billing model: running"):
            assert shown in table
        # Whole ids, even in a pipe 80 columns wide: a dry run must be actionable.
        assert handled.id in table
        assert unsaved.id in table
        assert handled.id not in live_ids(api)
        assert unsaved.id in live_ids(api)

        assert main(["--config", str(config), "reap", "--idle-for", "5"]) == 2  # no unit
        assert "error: bad duration" in capsys.readouterr().err

        assert main(["--config", str(config), "reconcile", "--json"]) == 0
        swept = json.loads(capsys.readouterr().out)
        assert swept["failed"] == []
        assert swept["alarm"] is False
    rows = reaper_actions.read(engine)
    assert [r.dry_run for r in rows].count(True) == 2
    engine.dispose()


def test_reap_policy_from_settings_and_flags():
    settings = Settings(
        owner="me",
        reaper={"idle_for": "1h", "owned_deployments": ["depl_1"], "max_age": "2d"},
    )
    policy = wiring.reap_policy(settings, idle_for="0s", include_unowned=True)
    assert policy == ReapPolicy(
        owner="me",
        idle_for=timedelta(0),
        include_unowned=True,
        max_age=timedelta(days=2),
        owned_deployments=frozenset({"depl_1"}),
        exclude_metadata={"keep": "true"},
    )


def test_exit_code_is_non_zero_when_anything_failed():
    from idlehook.cli.reap import exit_code
    from sessions.reaper import Outcome

    ok = ReapReport(run_id="r", dry_run=False)
    assert exit_code(ok) == 0
    refused = ReapReport(run_id="r", dry_run=False)
    refused.outcomes.append(
        Outcome("sesn_1", ReaperActionKind.REFUSED, "handled", False, "idle", error="409")
    )
    assert exit_code(refused) == 1


def test_archive_before_delete_uses_the_archive_plugin(tmp_path, sqlite_url):
    engine = make_engine(sqlite_url, pool_size=1)
    settings = Settings(results_dir=tmp_path / "results", owner=OWNER)
    policy = ReapPolicy(owner=OWNER, idle_for=timedelta(0), archive_before_delete=True)
    with emulator() as api:
        (session,) = _sessions(api, engine, 1, saved=False)

        async def reap() -> ReapReport:
            async with api.client() as client:
                archive = wiring.archiver(settings, engine, client)
                return await Reaper(client, engine, policy, archive=archive).run()

        report = asyncio.run(reap())
        assert session.id not in live_ids(api)
    assert [o.action for o in report.outcomes] == [
        ReaperActionKind.ARCHIVED,
        ReaperActionKind.DELETED,
    ]
    folder = tmp_path / "results" / session.id
    events = [json.loads(line) for line in (folder / "events.jsonl").read_text().splitlines()]
    assert any(e["type"] == "session.status_idle" for e in events)
    assert json.loads((folder / "result.json").read_text())["session_id"] == session.id
    with Session(engine) as db:
        row = db.get(TrackedSession, session.id)
        assert row is not None
        assert row.result_captured_at is not None
        assert row.transcript_saved_at is not None
        assert row.deleted_at is not None
    engine.dispose()
