"""Shared fixtures: real servers on loopback, real SQLite and PostgreSQL databases; and the
lanes: every test is marked by where it lives and what it uses (`lanes`), so `scripts/test
--fast` can leave out what needs PostgreSQL, processes, a browser or a long time."""

import shutil
import sqlite3
from collections.abc import Iterable, Iterator
from pathlib import Path

import pytest

from store.engine import make_engine, migrate
from tests.support.databases import PostgresFactory, postgres_available, postgres_is_optional

# -- lanes ---------------------------------------------------------------------------------
# `scripts/test --fast` runs `not (postgres or e2e or browser or slow)`: the pure tests, the
# store on SQLite, and the in-process ones cheap enough to keep the lane well under a minute.
# Marks come from where a test lives (below) and the fixtures it takes, not from each file.

_LANE_BY_PATH = {
    # The whole stack as processes (receiver, worker, emulator), driven from outside.
    "tests/e2e/": "e2e",
    # The publish_* plugins against the machine's Redis, NATS and RabbitMQ, and the whole stack.
    "tests/integrations/": "e2e",
    # Faults inflicted on real processes and storage, soak and scale.
    "tests/reliability/": "slow",
    # Headless Chromium.
    "tests/web/test_browser.py": "browser",
    "tests/web/test_budget_page.py::test_headless_chromium": "browser",
}
# Measured at a third of a second a test or more (`scripts/test --durations=0`): they run
# `idlehook` commands or writers in processes, serve the emulator (and a receiver, a worker or
# a launcher) per test, wait out the HTTP guard's deadlines, or many emulated turns.
# A new module is fast until measured.
_SLOW_MODULES = frozenset(
    {
        "tests/emulator/test_api.py",
        "tests/emulator/test_billing.py",
        "tests/emulator/test_budgets.py",
        "tests/emulator/test_contract.py",
        "tests/emulator/test_deployments_billing.py",
        "tests/emulator/test_runs.py",
        "tests/emulator/test_stream_and_limits.py",
        "tests/emulator/test_webhooks.py",
        "tests/handlers/test_budget_log.py",
        "tests/handlers/test_builtin.py",
        "tests/handlers/test_cli.py",
        "tests/handlers/test_example_plugin.py",
        "tests/handlers/test_shared_reads.py",
        "tests/handlers/test_worker.py",
        "tests/receiver/test_asgi.py",
        "tests/receiver/test_fuzz.py",
        "tests/receiver/test_http_guard.py",
        "tests/receiver/test_intake.py",
        "tests/receiver/test_journal_intake.py",
        "tests/receiver/test_keyring.py",
        "tests/receiver/test_ops.py",
        "tests/sessions/test_budget_cli.py",
        "tests/sessions/test_budget_raise.py",
        "tests/sessions/test_endpoint_alarm.py",
        "tests/sessions/test_followups.py",
        "tests/sessions/test_launch_api.py",
        "tests/sessions/test_launch_budget.py",
        "tests/sessions/test_launch_burst.py",
        "tests/sessions/test_launch_cli.py",
        "tests/sessions/test_launch_recovery.py",
        "tests/sessions/test_launcher.py",
        "tests/sessions/test_pacing.py",
        "tests/sessions/test_reap.py",
        "tests/sessions/test_reap_cli.py",
        "tests/sessions/test_reconcile.py",
        "tests/sessions/test_reconcile_horizon.py",
        "tests/sessions/test_watchdog.py",
        "tests/store/test_inbox.py",  # a writer process per inbox
        "tests/store/test_journal.py",
        "tests/store/test_journal_drain.py",
        "tests/store/test_prune_cli.py",
        "tests/store/test_status_journal.py",
        "tests/tools/test_approvals.py",
        "tests/tools/test_custom_tools.py",
        "tests/web/test_api_metrics.py",
        "tests/web/test_auth.py",
        "tests/web/test_budget_page.py",
        "tests/web/test_cli_output.py",
        "tests/web/test_recovery_page.py",  # a receiver and the emulator for one test
        "tests/cli/test_recovery.py",  # 5-7 `idlehook` processes a test, with the emulator
        "tests/test_logging.py",
        # `idlehook` commands, and `serve`, as processes.
        "tests/cli/test_quiet.py",
        "tests/cli/test_serve_start.py",
        "tests/cli/test_status.py",
    }
)
_POSTGRES_FIXTURES = frozenset({"postgres_url", "postgres_factory"})


def lanes_of(nodeid: str, fixtures: Iterable[str]) -> set[str]:
    """The lane marks of one test, from its node id (relative to the rootdir) and fixtures."""
    marks = {m for prefix, m in _LANE_BY_PATH.items() if nodeid.startswith(prefix)}
    if nodeid.split("::", 1)[0] in _SLOW_MODULES:
        marks.add("slow")
    if _POSTGRES_FIXTURES.intersection(fixtures):
        marks.add("postgres")
    return marks


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        fixtures: list[str] = getattr(item, "fixturenames", [])
        for mark in sorted(lanes_of(item.nodeid, fixtures)):
            item.add_marker(mark)
        if item.nodeid.startswith("tests/store/test_migrations.py"):
            # The migrations' own test: its database is migrated from empty, not copied.
            item.add_marker("fresh_db")


@pytest.fixture(scope="session")
def postgres_factory() -> Iterator[PostgresFactory]:
    reason = postgres_available()
    if reason is not None:
        if postgres_is_optional():
            pytest.skip(reason)
        pytest.fail(reason + " (PostgreSQL tests must run; set IDLEHOOK_SKIP_POSTGRES=1 to skip)")
    factory = PostgresFactory()
    yield factory
    factory.close()


@pytest.fixture
def postgres_url(
    postgres_factory: PostgresFactory, request: pytest.FixtureRequest
) -> Iterator[str]:
    fresh = request.node.get_closest_marker("fresh_db") is not None
    with postgres_factory.database(migrated=not fresh) as url:
        if fresh:
            _migrate(url)
        yield url


def _migrate(url: str) -> None:
    engine = make_engine(url, pool_size=1)
    try:
        migrate(engine)
    finally:
        engine.dispose()


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One SQLite file migrated for real, once per run; each test gets a copy of it (a copy
    costs a millisecond, running the migrations a tenth of a second)."""
    path = tmp_path_factory.mktemp("sqlite-template") / "idlehook.db"
    _migrate(f"sqlite:///{path}")
    # Everything into the main file, so that the file alone is the whole database: a copy
    # then needs no -wal or -shm beside it (and none is copied).
    conn = sqlite3.connect(path)
    try:
        busy, _, _ = conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
    finally:
        conn.close()
    assert busy == 0, "the template's WAL could not be checkpointed"
    return path


@pytest.fixture
def sqlite_url(tmp_path: Path, sqlite_template: Path, request: pytest.FixtureRequest) -> str:
    """A migrated, empty SQLite database: a copy of the template, or, for a test marked
    `fresh_db` (the migrations' own tests), the migrations run on an empty file."""
    path = tmp_path / "idlehook.db"
    url = f"sqlite:///{path}"
    if request.node.get_closest_marker("fresh_db") is not None:
        _migrate(url)
    else:
        shutil.copyfile(sqlite_template, path)
    return url


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest) -> str:
    """A migrated, empty database URL: every store test runs on both engines."""
    name = "sqlite_url" if request.param == "sqlite" else "postgres_url"
    url: str = request.getfixturevalue(name)
    return url
