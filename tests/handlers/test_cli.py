"""`idlehook worker --drain` and `status` through the real command line.

Each command runs in its own process, as an operator would run it: logging configuration is
process-wide and must not leak into other tests.
"""

import json
import subprocess
import sys
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy.engine import Engine

from store.engine import make_engine
from store.runs import RunStore
from tests.handlers.conftest import API_KEY, Sessions
from tests.handlers.helpers import Clock, add_delivery


@pytest.fixture
def cli_env(monkeypatch: pytest.MonkeyPatch, sqlite_url: str, tmp_path: Path) -> Path:
    # SQLite only: the queries are covered on both engines in tests/store/test_runs.py, and
    # each command is a fresh interpreter (a few seconds on a busy machine).
    monkeypatch.setenv("IDLEHOOK_DATABASE_URL", sqlite_url)
    monkeypatch.setenv("IDLEHOOK_RESULTS_DIR", str(tmp_path / "results"))
    monkeypatch.setenv("IDLEHOOK_CONFIG", str(tmp_path / "none.toml"))
    return tmp_path / "results"


# `idlehook` with only this module's commands: the other groups are not under test here.
ONLY_THIS_GROUP = """
import argparse, sys
from idlehook.cli.worker import register
parser = argparse.ArgumentParser(prog="idlehook")
parser.add_argument("--config", default=None)
parser.add_argument("--log-json", action="store_true", default=None)
register(parser.add_subparsers())
args = parser.parse_args()
sys.exit(args.func(args))
"""


def main(args: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", ONLY_THIS_GROUP, *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )


@pytest.fixture
def engine(sqlite_url: str) -> Iterator[Engine]:
    engine = make_engine(sqlite_url, pool_size=2)
    yield engine
    engine.dispose()


def test_status(cli_env: Path, engine: Engine) -> None:
    store = RunStore(engine)
    clock = Clock()
    add_delivery(engine, "session.status_terminated", "sesn_dead", now=clock.now())
    [run] = store.claim("w", clock.now(), timedelta(seconds=30))
    store.fail(run.id, "w", clock.now(), "RuntimeError: boom", None, 1.0, attempt=run.attempts)

    report = json.loads(main(["status", "--json"]).stdout)
    # The dead run is the delivery's routing step: apart from handler runs, as on the page.
    assert report["runs_by_state"] == {}
    assert report["routing_by_state"] == {"dead": 1}
    assert report["dead_letters"][0]["last_error"] == "RuntimeError: boom"
    assert "boom" in main(["status"]).stdout
    # `idlehook replay` is idlehook/cli/recovery.py's now: tests/cli/test_recovery.py.


def test_worker_drain_archives_with_the_default_routes(
    cli_env: Path,
    engine: Engine,
    emulator_url: str,
    sessions: Sessions,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("ANTHROPIC_BASE_URL", emulator_url)
    monkeypatch.setenv("ANTHROPIC_API_KEY", API_KEY)
    session_id = sessions.finished()
    add_delivery(engine, "session.status_idled", session_id)
    main(["worker", "--drain", "--concurrency", "2"])
    assert RunStore(engine).unfinished() == 0
    assert (cli_env / session_id / "result.json").exists()
