"""The local journal under real store faults, through real receiver processes.

A private PostgreSQL cluster is stopped (`pg_ctl -m immediate`), or SQLite's disk (a tmpfs) is
filled, while the emulator delivers signed webhooks like Anthropic: every delivery is answered
2xx (202 `journaled` while the store is down), the emulator's endpoint is never disabled, and
once the store is back every event is stored once and its handlers ran once. A journal that
cannot take a delivery either answers 503 and nothing acknowledged is lost; a receiver killed
with `kill -9` holding a journal (its last record torn) loses nothing it acknowledged: the next
receiver drains it.
"""

import sqlite3
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from store import journal_frames as frames
from store import journal_records as records
from store.engine import make_engine, migrate
from store.journal import scan_directory
from tests.reliability.conftest import Cluster, tmpfs
from tests.reliability.support import (
    JOURNAL_ROUTES,
    PATH,
    StoreView,
    base_env,
    done_lines,
    emulator,
    event,
    launcher,
    processes,
    signed,
    wait_for,
)

SESSIONS = 12  # launched while the store is down: ~2 webhooks each, past the 20 that disable


@dataclass
class StoreFault:
    name: str
    url: str
    down: Callable[[], None]
    up: Callable[[], None]


@pytest.fixture(params=["postgres_stopped", "sqlite_disk_full"])
def fault(request: pytest.FixtureRequest) -> Iterator[StoreFault]:
    if request.param == "postgres_stopped":
        cluster: Cluster = request.getfixturevalue("cluster")
        _migrate(cluster.url)
        yield StoreFault(request.param, cluster.url, cluster.stop, cluster.start)
        return
    with tmpfs("64m", "idlehook-db-") as mount:
        url = f"sqlite:///{mount.root / 'idlehook.db'}"
        _migrate(url)
        filler = mount.root / "filler"
        yield StoreFault(request.param, url, lambda: _fill(mount.root, filler), filler.unlink)


def _migrate(url: str) -> None:
    engine = make_engine(url, pool_size=1)
    try:
        migrate(engine)
    finally:
        engine.dispose()


def _fill(root: Path, filler: Path) -> None:
    """Fill SQLite's disk. Its WAL first goes back to zero bytes, so the next commit needs new
    space (a WAL reused from its start would take commits on a full disk)."""
    db = sqlite3.connect(root / "idlehook.db", timeout=10, isolation_level=None)
    try:
        deadline = time.monotonic() + 10
        while db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0] != 0:
            assert time.monotonic() < deadline, "the WAL would not truncate"
            time.sleep(0.05)
    finally:
        db.close()
    with filler.open("wb", buffering=0) as f:
        try:
            while True:
                f.write(b"\0" * (1 << 16))
        except OSError:
            pass  # full


def test_store_down_under_emulator_load_every_delivery_is_acknowledged_and_handled_once(
    fault: StoreFault, tmp_path: Path
) -> None:
    handled = tmp_path / "handled.jsonl"
    store = StoreView(fault.url)
    try:
        with (
            emulator(speed=40, run_seconds=2.0) as (emu, api_url),
            processes(tmp_path) as procs,
        ):
            env = base_env(
                tmp_path,
                fault.url,
                base_url=api_url,
                journal=handled,
                routes=JOURNAL_ROUTES,
                IDLEHOOK_JOURNAL__DRAIN_SECONDS="0.2",
            )
            receiver = procs.serve("receiver", env, worker=True)
            emu.apply_config({"webhook_urls": [f"{receiver.url}{PATH}"]})
            launch = launcher(api_url, "journal")
            launch(3)
            wait_for(lambda: len(idled(emu)) >= 3 and emu.sender.pending() == 0, timeout=30)
            fault.down()
            launch(SESSIONS)
            wait_for(lambda: len(idled(emu)) >= 3 + SESSIONS, timeout=60)
            wait_for(lambda: emu.sender.pending() == 0, timeout=60)
            down = httpx.get(f"{receiver.url}/readyz", timeout=30)
            scraped = httpx.get(f"{receiver.url}/metrics", timeout=60).text
            fault.up()
            emitted = {e["id"] for e in emu.sender.emitted}
            wait_for(lambda: store.event_ids() == emitted and store.unfinished() == 0, timeout=90)
            wait_for(lambda: len(done_lines(handled)) >= len(idled(emu)), timeout=30)
            up = httpx.get(f"{receiver.url}/readyz", timeout=30).json()
            attempts = list(emu.sender.attempts)
            endpoints = list(emu.sender.endpoints.values())
        statuses = Counter(a.status for a in attempts)
        # Every attempt acknowledged: nothing retried, nothing dropped, the endpoint alive.
        assert {a.outcome for a in attempts} == {"delivered"}, statuses
        assert set(statuses) == {202, 204}, statuses
        assert statuses[202] >= SESSIONS, statuses  # the outage's, from the journal
        assert endpoints
        assert all(e.enabled for e in endpoints)
        assert (down.status_code, down.json()["store"]) == (200, "unavailable"), down.text
        assert down.json()["journal"]["depth"] > 0
        assert "idlehook_journal_depth" in scraped
        assert "idlehook_journal_oldest_seconds" in scraped
        assert (up["store"], up["journal"]["depth"]) == ("ok", 0)
        # Each event stored once; each idle handled once.
        assert len(store.deliveries()) == len(emitted)
        assert sum(d.duplicates for d in store.deliveries()) == 0
        assert Counter(r["event_id"] for r in done_lines(handled)) == Counter(idled(emu))
        assert not list((tmp_path / "data" / "journal").glob("*.journal"))
    finally:
        store.close()


def test_when_the_journal_cannot_take_it_either_the_answer_is_503_and_nothing_is_lost(
    tmp_path: Path, tiny_disk: Path
) -> None:
    with tmpfs("64m", "idlehook-db-") as mount:
        url = f"sqlite:///{mount.root / 'idlehook.db'}"
        _migrate(url)
        store = StoreView(url)
        statuses: Counter[int] = Counter()
        errors: Counter[str] = Counter()
        acked: list[str] = []
        try:
            with processes(tmp_path) as procs:
                # The journal on its own 1 MiB disk.
                env = base_env(tmp_path, url, IDLEHOOK_JOURNAL__PATH=str(tiny_disk))
                receiver = procs.serve("receiver", env)
                _fill(mount.root, mount.root / "filler")
                pad = "x" * 8000
                with httpx.Client(base_url=str(receiver.url), timeout=30) as http:
                    for i in range(400):
                        payload = {**event(f"wevt_full_{i}", "sesn_full"), "pad": pad}
                        body, headers = signed(payload)
                        answer = http.post(PATH, content=body, headers=headers)
                        statuses[answer.status_code] += 1
                        if answer.is_success:
                            acked.append(payload["id"])
                        else:
                            errors[answer.json()["error"]] += 1
                        if statuses[503] >= 5:
                            break
                    ready = http.get("/readyz")
                (mount.root / "filler").unlink()
                wait_for(lambda: scan_directory(tiny_disk).files == 0, timeout=60)
            assert statuses[202] > 50, statuses  # ~1 MiB of 8 KB deliveries journaled first
            assert set(statuses) == {202, 503}, statuses
            assert set(errors) == {"disk_full"}, errors
            assert ready.status_code == 503, ready.text
            assert ready.json()["journal"]["writable"] is False
            stored = store.event_ids()
            assert set(acked) <= stored, "every 2xx is a stored row"
        finally:
            store.close()


def test_a_receiver_killed_holding_a_journal_loses_nothing_the_next_one_drains_it(
    fault: StoreFault, tmp_path: Path
) -> None:
    store = StoreView(fault.url)
    journal_dir = tmp_path / "data" / "journal"
    try:
        with processes(tmp_path) as procs:
            env = base_env(tmp_path, fault.url, IDLEHOOK_JOURNAL__DRAIN_SECONDS="0.2")
            first = procs.serve("receiver", env)
            fault.down()
            load = Sender(f"{first.url}{PATH}")
            thread = threading.Thread(target=load.run, daemon=True)
            thread.start()
            wait_for(lambda: len(load.acked) >= 30, timeout=60)
            first.kill9()  # mid-load, mid-journal
            thread.join(timeout=30)
            left = scan_directory(journal_dir)
            assert left.depth >= len(load.acked), (left, len(load.acked))
            assert left.orphaned == left.files >= 1
            # A crash mid-append: half a record reached the disk after the last whole one.
            newest = max(journal_dir.glob("*.journal"), key=lambda p: p.stat().st_mtime)
            torn = frames.encode(records.encode(("wevt_torn", *_row_tail())))
            with newest.open("ab") as f:
                f.write(torn[: len(torn) // 2])
            fault.up()
            second = procs.serve("receiver2", env)
            wait_for(lambda: scan_directory(journal_dir).files == 0, timeout=60)
            scraped = httpx.get(f"{second.url}/metrics", timeout=30).text
        stored = store.event_ids()
        assert set(load.acked) <= stored, "an acknowledged delivery was lost"
        assert stored <= set(load.sent)
        assert "wevt_torn" not in stored
        deliveries = store.deliveries()
        assert len(deliveries) == len(stored)  # once each
        assert len(store.runs("_route")) == len(stored)  # and routed once each
        assert _sample(scraped, "idlehook_journal_skipped_bytes_total") == len(torn) // 2
        assert _sample(scraped, 'idlehook_journal_drained_total{outcome="stored"}') >= len(
            load.acked
        )
    finally:
        store.close()


# -- helpers -------------------------------------------------------------------------------------


@dataclass
class Sender:
    """Signed deliveries, each sent once, as fast as they are answered; records the 2xx."""

    url: str
    sent: list[str] = field(default_factory=list)
    acked: list[str] = field(default_factory=list)

    def run(self) -> None:
        with httpx.Client(timeout=30) as http:
            for n in range(100_000):
                event_id = f"wevt_kill_{n}"
                body, headers = signed(event(event_id, f"sesn_kill_{n % 7}"))
                self.sent.append(event_id)
                try:
                    answer = http.post(self.url, content=body, headers=headers)
                except httpx.HTTPError:
                    return  # the receiver is gone
                if answer.is_success:
                    self.acked.append(event_id)


def idled(emu: Any) -> list[str]:
    return [e["id"] for e in emu.sender.emitted if e["data"]["type"] == "session.status_idled"]


def _row_tail() -> tuple[Any, ...]:
    now = time.time()
    return ("session.status_idled", "sesn_t", "sesn_t", now, now, "{}", {}, 0, "webhook")


def _sample(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[-1])
    raise AssertionError(f"{name} not in /metrics")
