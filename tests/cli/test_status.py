"""`idlehook status` answers where an operator looks first: the last webhook's age, the
reconciler's silence alarm, requests the receiver refused (per reason, last hour and in all),
and handler runs counted as the page counts them (a delivery's `_route` step apart). The store
is written by its own modules; the command runs as a process."""

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.engine import Engine

from sessions.reconciler import SILENCE
from store import dashboard, rejections, watch
from store.engine import make_engine
from store.intake_counts import SILENCE_MARK
from tests.cli.proc import idlehook
from tests.handlers.helpers import add_delivery


@pytest.fixture
def engine(sqlite_url: str) -> Iterator[Engine]:
    engine = make_engine(sqlite_url, pool_size=2)
    yield engine
    engine.dispose()


@pytest.fixture
def config(tmp_path: Path, sqlite_url: str) -> Path:
    path = tmp_path / "idlehook.toml"
    path.write_text(f'database_url = "{sqlite_url}"\ndata_dir = "{tmp_path / "data"}"\n')
    return path


def status_json(config: Path) -> dict[str, Any]:
    done = idlehook(config, "status", "--json")
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    report: dict[str, Any] = json.loads(done.stdout)
    return report


def test_the_silence_mark_is_the_reconcilers() -> None:
    assert SILENCE_MARK == SILENCE


def test_a_quiet_store_shows_no_webhook_and_no_alarm(config: Path) -> None:
    report = status_json(config)
    assert report["webhooks"]["last_received_at"] is None
    assert report["webhooks"]["silence_alarm"] is False
    assert report["rejections"] == {"last_hour": 0, "total": 0, "by_reason": []}
    text = idlehook(config, "status").stdout
    assert "Last webhook received: never" in text
    assert "Silence alarm: off" in text
    assert "Rejected webhook requests: none" in text


def test_the_silence_alarm_is_shown_until_a_webhook_comes(config: Path, engine: Engine) -> None:
    now = datetime.now(UTC)
    # The reconciler read a change ten minutes ago that no webhook reported (alarm after 5).
    watch.set_mark(engine, SILENCE, now - timedelta(minutes=10), now)
    report = status_json(config)
    assert report["webhooks"]["silence_alarm"] is True
    assert report["webhooks"]["unreported_change_since"] is not None
    assert "Silence alarm: ON" in idlehook(config, "status").stdout

    add_delivery(engine, "session.status_idled", "sesn_late", now=now)  # a webhook, at last
    report = status_json(config)
    assert report["webhooks"]["silence_alarm"] is False
    assert report["webhooks"]["last_received_seconds_ago"] < 60
    text = idlehook(config, "status").stdout
    assert "Silence alarm: off" in text
    assert "Last webhook received: " in text
    assert "s ago (" in text


def test_rejections_last_hour_and_in_all_survive_folding(config: Path, engine: Engine) -> None:
    now = datetime.now(UTC)
    rejections.add(engine, {("bad_signature", 401): 5}, now - timedelta(days=3))
    rejections.add(engine, {("bad_signature", 401): 2}, now - timedelta(hours=2))
    rejections.add(engine, {("bad_signature", 401): 1, ("body_too_large", 413): 4}, now)
    rejections.add(engine, {("bad_signature", 401): 1}, now)  # the same minute again
    # Minutes older than a day fold into one row: the totals stay what they were.
    rejections.add(engine, {}, now, fold=True)
    report = status_json(config)
    assert report["rejections"]["by_reason"] == [
        {"reason": "body_too_large", "status": 413, "last_hour": 4, "total": 4},
        {"reason": "bad_signature", "status": 401, "last_hour": 2, "total": 9},
    ]
    assert report["rejections"]["last_hour"] == 6
    assert report["rejections"]["total"] == 13
    assert dashboard.load(engine, now).totals.rejected_last_hour == 6  # the page's card
    text = idlehook(config, "status").stdout
    assert "Rejected webhook requests: 6 in the last hour, 13 in all" in text
    assert "bad_signature" in text
    assert "idlehook keys list" in text  # what a 401 means, and where to look


def test_runs_by_state_are_handler_runs_as_on_the_page(config: Path, engine: Engine) -> None:
    # Two deliveries, not routed yet: two `_route` runs and no handler run at all.
    add_delivery(engine, "session.status_idled", "sesn_a")
    add_delivery(engine, "session.status_idled", "sesn_b")
    report = status_json(config)
    page = dashboard.load(engine, datetime.now(UTC)).totals
    assert report["runs_by_state"] == page.runs_by_state == {}
    assert report["routing_by_state"] == {"pending": 2}
    assert report["unfinished"] == 2  # the inbox depth still counts what waits to be routed
    text = idlehook(config, "status").stdout
    assert "Handler runs: none" in text
    assert "Routing steps (one per delivery): 2 pending" in text
