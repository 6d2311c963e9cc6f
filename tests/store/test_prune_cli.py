"""`idlehook db prune` as an operator runs it: its own process, a real SQLite file."""

import json
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from store.engine import make_engine
from store.models import Delivery, ReaperAction, TrackedSession
from tests.handlers.helpers import add_delivery

# `idlehook db` with only the prune command: the other groups are not under test here.
ONLY_PRUNE = """
import argparse, sys
from idlehook.cli import prune
parser = argparse.ArgumentParser(prog="idlehook")
parser.add_argument("--config", default=None)
parser.add_argument("--log-json", action="store_true", default=None)
db = parser.add_subparsers().add_parser("db").add_subparsers()
prune.register(db)
args = parser.parse_args()
sys.exit(args.func(args))
"""
_deliveries = Delivery.__table__  # type: ignore[attr-defined]
_runs_done = "UPDATE handler_runs SET state = 'succeeded', finished_at = :at, updated_at = :at"


def idlehook(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", ONLY_PRUNE, "db", "prune", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.fixture
def engine(monkeypatch: pytest.MonkeyPatch, sqlite_url: str, tmp_path: Path) -> Iterator[Engine]:
    monkeypatch.setenv("IDLEHOOK_DATABASE_URL", sqlite_url)
    monkeypatch.setenv("IDLEHOOK_CONFIG", str(tmp_path / "none.toml"))
    engine = make_engine(sqlite_url, pool_size=1)
    old = datetime.now(UTC) - timedelta(days=40)
    with engine.begin() as conn:
        conn.execute(
            TrackedSession.__table__.insert().values(  # type: ignore[attr-defined]
                id="sesn_gone", first_seen_at=old, updated_at=old, deleted_at=old, metadata={}
            )
        )
    for n in range(3):
        add_delivery(engine, session_id="sesn_gone", now=old + timedelta(seconds=n))
    with engine.begin() as conn:
        conn.execute(sa.text(_runs_done), {"at": old.replace(tzinfo=None)})
        conn.execute(
            ReaperAction.__table__.insert().values(  # type: ignore[attr-defined]
                run_id="r", session_id="s", action="deleted", reason="idle", at=old
            )
        )
    add_delivery(engine, session_id="sesn_gone")  # today's, its routing run pending
    yield engine
    engine.dispose()


def deliveries(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(sa.select(sa.func.count()).select_from(_deliveries)).scalar_one())


def test_dry_run_prints_counts_and_deletes_nothing(engine: Engine) -> None:
    done = idlehook("--dry-run")
    assert done.returncode == 0, done.stderr
    assert "would delete" in done.stdout
    lines = {line.split("│")[1].strip(): line for line in done.stdout.splitlines() if "│" in line}
    assert lines["deliveries"].split("│")[2].strip() == "3"
    assert lines["handler_runs"].split("│")[2].strip() == "3"
    assert deliveries(engine) == 4

    report = json.loads(idlehook("--dry-run", "--json").stdout)
    # audit keeps 365 days by default: the 40-day-old reaper row stays.
    assert report["would_delete"]["reaper_actions"] == 0
    assert report["total"] == 3 + 3  # the deleted session still has today's delivery
    assert deliveries(engine) == 4


def test_older_than_deletes_and_keeps_todays(engine: Engine) -> None:
    done = idlehook("--older-than", "30d", "--json")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["deleted"]["deliveries"] == 3
    assert report["deleted"]["reaper_actions"] == 1  # --older-than applies to every kind
    assert deliveries(engine) == 1


def test_older_than_under_the_floor_is_refused(engine: Engine) -> None:
    done = idlehook("--older-than", "1h")
    assert done.returncode == 2
    assert "24h floor" in done.stdout
    assert deliveries(engine) == 4
