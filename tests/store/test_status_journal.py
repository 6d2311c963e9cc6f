"""`idlehook status` shows deliveries stored, duplicates suppressed and the local journal's depth
and age, as text and JSON, in a real process; with the store down it still shows the journal."""

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from store.engine import make_engine
from store.ingest import write_rows
from store.journal import Journal, store_key
from tests.store.test_journal import T0, row

ONLY_STATUS = """
import argparse, sys
from idlehook.cli.worker import register
parser = argparse.ArgumentParser(prog="idlehook")
parser.add_argument("--config", default=None)
parser.add_argument("--log-json", action="store_true", default=None)
register(parser.add_subparsers())
args = parser.parse_args()
sys.exit(args.func(args))
"""


def status(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", ONLY_STATUS, "status", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    inherited = os.environ.items()  # noqa: TID251
    values = {k: v for k, v in inherited if not k.startswith("IDLEHOOK_")}
    values["IDLEHOOK_CONFIG"] = str(tmp_path / "none.toml")
    values["IDLEHOOK_DATA_DIR"] = str(tmp_path / "data")
    return values


def test_status_counts_deliveries_and_the_journal(
    env: dict[str, str], sqlite_url: str, tmp_path: Path
) -> None:
    env["IDLEHOOK_DATABASE_URL"] = sqlite_url
    engine = make_engine(sqlite_url, pool_size=1)
    try:
        write_rows(engine, [row(1), row(2), row(1)], T0)  # one copy suppressed
    finally:
        engine.dispose()

    async def journal_three() -> None:
        journal = Journal(tmp_path / "data" / "journal", store=store_key(sqlite_url))
        for n in (3, 4, 5):
            await journal.append(row(n, T0 + n))
        journal.close()  # as a receiver that stopped while the store was down
        # Another database's journal in the same directory: not this store's to count.
        other = Journal(tmp_path / "data" / "journal", store=store_key("sqlite:///other.db"))
        await other.append(row(9))
        other.close()

    asyncio.run(journal_three())
    report = json.loads(status(env, "--json").stdout)
    assert report["deliveries"] == {
        "stored": 2,
        "duplicates_suppressed": 1,
        "unrecognised": 0,
        "unrecognised_duplicates": 0,
    }
    assert report["journal"]["depth"] == 3
    assert report["journal"]["orphaned_files"] == 1
    assert report["journal"]["other_databases_files"] == 1
    assert report["journal"]["oldest_seconds"] > 0
    text = status(env).stdout
    assert "Deliveries stored: 2 (duplicates suppressed: 1)" in text
    assert "Local journal: 3 deliveries acknowledged but not yet in the store" in text


def test_status_with_the_store_down_still_shows_the_journal(
    env: dict[str, str], tmp_path: Path
) -> None:
    # A PostgreSQL nobody listens on: the connection is refused.
    env["IDLEHOOK_DATABASE_URL"] = url = "postgresql://postgres@127.0.0.1:9/none"

    async def journal_one() -> None:
        journal = Journal(tmp_path / "data" / "journal", store=store_key(url))
        await journal.append(row(7))
        journal.close()

    asyncio.run(journal_one())
    answer = status(env, "--json")
    assert answer.returncode == 3, answer.stderr
    report = json.loads(answer.stdout)
    assert report["store"] == {"error": "OperationalError"}
    assert report["journal"]["depth"] == 1
    text = status(env)
    assert text.returncode == 3
    assert "Store unavailable" in text.stdout
    assert "Local journal: 1 deliveries" in text.stdout
