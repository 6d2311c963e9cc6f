"""`idlehook reap --dry-run` as an operator runs it: `idlehook` processes against the emulator,
on SQLite and PostgreSQL. A dry run says "would" in its JSON, its log and on the page; every
session it examined and left alone is a row with its reason; what this store launched stays
its own when `owner` is renamed; a flag that cannot act says so."""

import asyncio
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.engine import Engine

from console import web_page
from store import dashboard, reaper_actions
from store.engine import make_engine
from tests.sessions.reaping import Api, emulator, live_ids, new_session

# Each test runs a dozen `idlehook` processes.
pytestmark = pytest.mark.slow


@pytest.fixture
def api() -> Iterator[Api]:
    with emulator() as running:
        yield running


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:
    engine = make_engine(db_url, pool_size=1)
    yield engine
    engine.dispose()


def write_config(path: Path, db_url: str, api: Api, owner: str) -> Path:
    path.write_text(
        f'database_url = "{db_url}"\n'
        f'results_dir = "{path.parent / "results"}"\n'
        'api_key = "sk-test"\n'
        f'base_url = "{api.url}"\n'
        f'owner = "{owner}"\n'
        "read_rpm = 6000\n"
        "create_rpm = 6000\n"
    )
    return path


# The real `idlehook` main (logging, errors, exit codes) with only the groups under test here,
# `start` and `reap`; piped as from cron, with no terminal width (pytest's would fold tables).
ONLY_START_AND_REAP = """
import os, sys
os.environ.pop("COLUMNS", None)
import idlehook.cli as cli
cli.GROUPS = ["idlehook.cli.sessions", "idlehook.cli.reap"]
cli.OPTIONAL_GROUPS = []
sys.exit(cli.main())
"""


def idlehook(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", ONLY_START_AND_REAP, "--config", str(config), *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def launch(api: Api, config: Path, *flags: str) -> str:
    done = idlehook(
        config,
        "start",
        "--agent", api.agent_id,
        "--environment", api.env_id,
        "--message", "go",
        *flags,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    session_id = done.stdout.strip()
    assert session_id.startswith("sesn_")
    return session_id


def wait_idle(api: Api, *ids: str) -> None:
    deadline = time.monotonic() + 30
    while any(str(api.emu.store.sessions[sid].status) != "idle" for sid in ids):
        assert time.monotonic() < deadline, "sessions did not come to rest"
        time.sleep(0.05)


@dataclass
class Scene:
    config: Path  # this instance's: its owner renamed from team-a to team-b since the launches
    ours: str  # launched here as team-a
    resting: str  # launched here as team-a, kept 3h by its launch
    keep: str  # launched here as team-a with keep=true
    foreign: str  # launched by another instance (its own store) as team-c
    unowned: str  # made by hand: no owner label, never tracked


@pytest.fixture
def scene(tmp_path: Path, db_url: str, api: Api) -> Scene:
    here = write_config(tmp_path / "idlehook.toml", db_url, api, "team-a")
    ours = launch(api, here)
    resting = launch(api, here, "--idle-for", "3h")
    keep = launch(api, here, "--metadata", "keep=true")
    other_db = f"sqlite:///{tmp_path / 'other.db'}"
    other = write_config(tmp_path / "other.toml", other_db, api, "team-c")
    foreign = launch(api, other)

    async def by_hand() -> Any:
        async with api.client() as client:
            return await new_session(api, client, owner=None)

    unowned = asyncio.run(by_hand()).id
    wait_idle(api, ours, resting, keep, foreign, unowned)
    # The README's example: the operator names this instance after the launches.
    write_config(here, db_url, api, "team-b")
    return Scene(here, ours, resting, keep, foreign, unowned)


def rows(report: dict[str, Any], key: str) -> dict[str, list[tuple[str, str]]]:
    found: dict[str, list[tuple[str, str]]] = {}
    for row in report[key]:
        found.setdefault(row["session_id"], []).append((row["action"], row["reason"]))
    return found


def test_dry_run_says_would_and_gives_every_kept_session_its_reason(
    scene: Scene, api: Api, engine: Engine
) -> None:
    done = idlehook(
        scene.config,
        "--log-json",
        "--log-level",
        "INFO",
        "reap",
        "--dry-run",
        "--json",
        "--idle-for",
        "0s",
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["dry_run"] is True
    # Launched here as team-a, still its own now that the config says team-b; nothing saved
    # its result yet, so it would be archived first.
    assert rows(report, "actions") == {
        scene.ours: [("would_archive", "idle_past_grace"), ("would_delete", "idle_past_grace")]
    }
    kept = {row["session_id"]: row for row in report["kept"]}
    assert set(kept) == {scene.resting, scene.keep, scene.foreign, scene.unowned}
    assert all(row["action"] == "kept" for row in kept.values())
    assert (kept[scene.keep]["reason"], kept[scene.keep]["detail"]) == (
        "excluded",
        "excluded: keep=true",
    )
    assert (kept[scene.foreign]["reason"], kept[scene.foreign]["detail"]) == (
        "foreign_owner",
        "foreign owner: team-c",
    )
    assert (kept[scene.unowned]["reason"], kept[scene.unowned]["detail"]) == (
        "unowned",
        "unowned (set --include-unowned and --max-age)",
    )
    resting = kept[scene.resting]
    assert resting["reason"] == "resting"
    assert resting["detail"].startswith("resting ")
    assert resting["detail"].endswith(" of 3h idle_for")
    assert report["examined"] == 5
    assert sum(report["kept_by_reason"].values()) == 4

    # The log says "would" too, and a kept line for each session left alone.
    events = [json.loads(line) for line in done.stderr.splitlines() if line.startswith("{")]
    by_event: dict[str, set[str]] = {}
    for e in events:
        if str(e.get("event", "")).startswith("reaper.") and "session_id" in e:
            by_event.setdefault(e["event"], set()).add(e["session_id"])
    assert by_event == {
        "reaper.would_archive": {scene.ours},
        "reaper.would_delete": {scene.ours},
        "reaper.kept": {scene.resting, scene.keep, scene.foreign, scene.unowned},
    }

    # Recorded as what it would do, and the page shows it so: never as a deletion.
    recorded = reaper_actions.read(engine, run_id=report["run_id"])
    assert sorted(r.action for r in recorded) == ["would_archive", "would_delete"]
    assert all(r.dry_run for r in recorded)
    view = dashboard.load(engine, datetime.now(UTC))
    assert view.totals.reaped == 0
    html = web_page.render(view, None, "nonce")
    assert ">would delete<" in html
    assert ">would archive<" in html
    assert ">deleted<" not in html
    assert live_ids(api) >= {scene.ours, scene.resting, scene.keep, scene.foreign, scene.unowned}

    # The table: every session examined, whole ids, kept rows with their reasons.
    table = idlehook(scene.config, "reap", "--dry-run", "--idle-for", "0s").stdout
    assert "would delete" in table
    for shown in (
        scene.ours,
        scene.resting,
        scene.keep,
        scene.foreign,
        scene.unowned,
        "excluded: keep=true",
        "foreign owner: team-c",
        "unowned (set --include-unowned and --max-age)",
        "of 3h idle_for",
    ):
        assert shown in table, shown


def test_a_real_run_deletes_what_this_store_launched_and_counts_the_rest(
    scene: Scene, api: Api
) -> None:
    done = idlehook(scene.config, "reap", "--idle-for", "0s")
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert scene.ours in out
    assert "deleted" in out
    assert "would" not in out
    # Kept sessions are counted by reason, not listed, unless asked.
    assert "kept 4: " in out
    for reason in ("1 excluded", "1 foreign_owner", "1 resting", "1 unowned"):
        assert reason in out
    assert scene.foreign not in out
    assert scene.ours not in live_ids(api)
    assert {scene.resting, scene.keep, scene.foreign, scene.unowned} <= live_ids(api)

    listed = idlehook(scene.config, "reap", "--all").stdout
    assert scene.foreign in listed
    assert "foreign owner: team-c" in listed


def test_include_unowned_without_max_age_warns_and_its_kept_rows_say_so(scene: Scene) -> None:
    done = idlehook(scene.config, "reap", "--dry-run", "--json", "--include-unowned")
    assert done.returncode == 0, done.stderr
    warning = (
        "warning: --include-unowned deletes nothing without --max-age (or [reaper] max_age); "
        "only runaways past max_running are interrupted"
    )
    assert warning in done.stderr.splitlines()
    kept = {row["session_id"]: row for row in json.loads(done.stdout)["kept"]}
    assert kept[scene.unowned]["detail"] == (
        "unowned: --include-unowned deletes nothing without --max-age (or [reaper] max_age); "
        "only runaways past max_running are interrupted"
    )

    # With an age it can act, and says nothing; an unowned session younger than it is kept.
    aged = idlehook(
        scene.config, "reap", "--dry-run", "--json", "--include-unowned", "--max-age", "7d"
    )
    assert aged.returncode == 0, aged.stderr
    assert "warning" not in aged.stderr
    kept = {row["session_id"]: row for row in json.loads(aged.stdout)["kept"]}
    assert kept[scene.unowned]["reason"] == "unowned_young"
    assert kept[scene.unowned]["detail"].startswith("unowned younger than max_age (")

    # --max-age alone cannot act either.
    alone = idlehook(scene.config, "reap", "--dry-run", "--json", "--max-age", "7d")
    assert "warning: --max-age applies only to unowned sessions" in alone.stderr
