"""`idlehook sessions`: the stop reason beside the status, metadata, deleted times, and filters
done in SQL (store.sessions.list_tracked) on SQLite and PostgreSQL; and the command itself, run
as a process against a store the real operations wrote."""

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy.engine import Engine

from store import sessions
from store.engine import make_engine
from store.launches import LaunchStore
from store.sessions import Launched, SessionFilter, SessionUpdate
from tests.cli.proc import config_file, idlehook

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:
    engine = make_engine(db_url, pool_size=2)
    yield engine
    engine.dispose()


def _seed(engine: Engine) -> None:
    """Four sessions as the launcher and the router record them."""
    rows = [
        ("sesn_a_end", "ops", "agent_1", 1, "idle", "end_turn", {"team": "core", "pr": "7"}),
        ("sesn_b_retry", "ops", "agent_1", 2, "idle", "retries_exhausted", {"team": "core"}),
        ("sesn_c_wait", "batch", "agent_2", 1, "idle", "requires_action", {"team": "web"}),
        ("sesn_d_run", "batch", "agent_2", 1, "running", None, {"team": "core", "k=x": "a b"}),
    ]
    with engine.begin() as conn:
        for n, (sid, owner, agent, version, status, reason, meta) in enumerate(rows):
            seen = SessionUpdate(
                status="running",
                agent_id=agent,
                agent_version=version,
                metadata={**meta, "idlehook_owner": owner},
                created_at=T0 + timedelta(minutes=n),
            )
            sessions.record_launch(
                conn, Launched(sid, owner=owner, route=None, deadline=None, seen=seen), T0
            )
            sessions.record(conn, sid, SessionUpdate(status=status, stop_reason=reason), T0)
        sessions.mark_deleted(conn, "sesn_a_end", T0 + timedelta(hours=1))


def _ids(engine: Engine, **where: object) -> list[str]:
    return [r.id for r in sessions.list_tracked(engine, SessionFilter(**where))]  # type: ignore[arg-type]


def test_filters_run_in_the_store_on_both_engines(engine: Engine) -> None:
    _seed(engine)
    # Newest first; a deleted session only when asked for.
    assert _ids(engine) == ["sesn_d_run", "sesn_c_wait", "sesn_b_retry"]
    assert _ids(engine, include_deleted=True)[-1] == "sesn_a_end"
    assert _ids(engine, status=["idle"]) == ["sesn_c_wait", "sesn_b_retry"]
    assert _ids(engine, stop_reason=["retries_exhausted", "requires_action"]) == [
        "sesn_c_wait",
        "sesn_b_retry",
    ]
    assert _ids(engine, stop_reason=["end_turn"]) == []
    assert _ids(engine, stop_reason=["end_turn"], include_deleted=True) == ["sesn_a_end"]
    assert _ids(engine, agent=["agent_1"]) == ["sesn_b_retry"]
    assert _ids(engine, agent=["agent_1:1"], include_deleted=True) == ["sesn_a_end"]
    assert _ids(engine, agent=["agent_1:2", "agent_2:1"]) == [
        "sesn_d_run",
        "sesn_c_wait",
        "sesn_b_retry",
    ]
    assert _ids(engine, owner=["batch"]) == ["sesn_d_run", "sesn_c_wait"]
    # Every metadata pair must match, compared as text; a key with "=" and a value with a space.
    assert _ids(engine, metadata={"team": "core"}) == ["sesn_d_run", "sesn_b_retry"]
    assert _ids(engine, metadata={"team": "core", "k=x": "a b"}) == ["sesn_d_run"]
    assert _ids(engine, metadata={"team": "core", "pr": "7"}, include_deleted=True) == [
        "sesn_a_end"
    ]
    assert _ids(engine, metadata={"team": "nobody"}) == []
    assert _ids(engine, status=["idle"], owner=["ops"], metadata={"team": "core"}) == [
        "sesn_b_retry"
    ]
    # LaunchStore.tracked (the API's listing) reads through the same function.
    assert [r.id for r in LaunchStore(engine).tracked(limit=2)] == ["sesn_d_run", "sesn_c_wait"]


# -- the command, as a process -----------------------------------------------------------------


@pytest.fixture
def config(tmp_path: Path, sqlite_url: str) -> Path:
    engine = make_engine(sqlite_url, pool_size=1)
    try:
        _seed(engine)
    finally:
        engine.dispose()
    return config_file(tmp_path / "idlehook.toml", sqlite_url, "http://127.0.0.1:9")


def test_the_listing_shows_stop_reasons_metadata_and_deleted_times(config: Path) -> None:
    out = idlehook(config, "sessions", "--all")
    assert out.returncode == 0, out.stderr
    lines = {line.split()[1]: line for line in out.stdout.splitlines() if "sesn_" in line}
    assert "idle (end_turn)" in lines["sesn_a_end"]
    assert "idle (retries_exhausted)" in lines["sesn_b_retry"]
    assert "idle (requires_action)" in lines["sesn_c_wait"]
    # Only the caller's pairs: idlehook's own keys stay out of the cell.
    assert "pr=7 team=core" in lines["sesn_a_end"]
    assert "idlehook_owner" not in out.stdout
    assert "2026-03-01 13:00" in lines["sesn_a_end"]  # deleted
    assert "2026-03-01 13:00" not in lines["sesn_b_retry"]


def test_json_carries_the_same_fields_and_the_filters_apply(config: Path) -> None:
    out = idlehook(
        config, "sessions", "--json", "--status", "idle", "--metadata", "team=core",
        "--owner", "ops", "--all",
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    listed = json.loads(out.stdout)
    assert [s["id"] for s in listed] == ["sesn_b_retry", "sesn_a_end"]
    first, deleted = listed
    assert first["status_label"] == "idle (retries_exhausted)"
    assert first["stop_reason"] == "retries_exhausted"
    assert first["metadata"] == {"team": "core"}
    assert first["deleted_at"] is None
    assert deleted["deleted_at"].startswith("2026-03-01T13:00")

    reason = ["--stop-reason", "requires_action"]
    waiting = json.loads(idlehook(config, "sessions", "--json", *reason).stdout)
    assert [s["id"] for s in waiting] == ["sesn_c_wait"]
    by_agent = json.loads(idlehook(config, "sessions", "--json", "--agent", "agent_1:2").stdout)
    assert [s["id"] for s in by_agent] == ["sesn_b_retry"]


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--agent", "agent_1:latest"], "bad --agent 'agent_1:latest'"),
        (["--metadata", "novalue"], "bad metadata 'novalue'"),
        (["--status", "sleeping"], "invalid choice"),
    ],
)
def test_bad_filters_are_usage_errors(config: Path, flags: list[str], message: str) -> None:
    out = idlehook(config, "sessions", *flags)
    assert out.returncode == 2
    assert message in out.stderr
    assert out.stdout == ""
