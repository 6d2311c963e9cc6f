"""Store faults under load, through a real receiver process.

PostgreSQL: a private cluster (initdb/pg_ctl in a temp dir, run as the `postgres` user) is
stopped for real while deliveries flow, then started again; the receiver answers 503 while it
is down, never 500, and recovers without a restart. SQLite: its disk fills up (a 1 MiB tmpfs);
the receiver answers 503 and acknowledges nothing it did not store.

These run with the local journal off (`[journal] enabled = false`): the store alone, and the
503 it falls back to. With the journal on, the same faults are acknowledged instead
(test_journal_faults.py)."""

import contextlib
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from store.engine import make_engine, migrate
from tests.reliability.conftest import Cluster
from tests.reliability.support import (
    PATH,
    StoreView,
    base_env,
    event,
    processes,
    signed,
    wait_for,
)


@dataclass
class Load:
    """Sends signed deliveries like Anthropic: retry each until a 2xx, record every answer."""

    url: str
    statuses: Counter[int] = field(default_factory=Counter)
    acked: list[str] = field(default_factory=list)
    stopping: threading.Event = field(default_factory=threading.Event)
    sent: int = 0

    def run(self) -> None:
        with httpx.Client(timeout=30) as http:
            while not self.stopping.is_set():
                event_id = f"wevt_load_{self.sent}"
                self.sent += 1
                body, headers = signed(event(event_id, f"sesn_load_{self.sent % 5}"))
                while True:
                    try:
                        status = http.post(self.url, content=body, headers=headers).status_code
                    except httpx.HTTPError:
                        status = 0
                    self.statuses[status] += 1
                    if 200 <= status < 300:
                        self.acked.append(event_id)
                        break
                    time.sleep(0.05)


@contextlib.contextmanager
def loading(url: str) -> Iterator[Load]:
    load = Load(url + PATH)
    thread = threading.Thread(target=load.run, daemon=True)
    thread.start()
    try:
        yield load
    finally:
        load.stopping.set()
        thread.join(timeout=60)


def test_postgres_stopped_under_load_is_503_then_recovers_without_restart(
    cluster: Cluster, tmp_path: Path
) -> None:
    engine = make_engine(cluster.url, pool_size=1)
    migrate(engine)
    engine.dispose()
    store = StoreView(cluster.url)
    try:
        with processes(tmp_path) as procs:
            env = base_env(tmp_path, cluster.url, IDLEHOOK_JOURNAL__ENABLED="false")
            receiver = procs.serve("receiver", env)
            with loading(str(receiver.url)) as load:
                wait_for(lambda: len(load.acked) >= 20, timeout=30)
                cluster.stop()
                wait_for(lambda: load.statuses[503] >= 5, timeout=30)
                acked_while_down = len(load.acked)
                time.sleep(0.5)
                assert len(load.acked) <= acked_while_down + 1  # at most one in flight
                cluster.start()
                wait_for(lambda: len(load.acked) >= acked_while_down + 20, timeout=60)
            assert receiver.alive()
        stored = store.event_ids()
        assert set(load.acked) <= stored, "every 2xx is a stored row"
        assert len(stored) == len(load.acked)  # and nothing beyond them
        assert not [s for s in load.statuses if s >= 500 and s != 503], load.statuses
    finally:
        store.close()


def test_sqlite_disk_full_is_503_and_nothing_unstored_is_acknowledged(
    tiny_disk: Path, tmp_path: Path
) -> None:
    url = f"sqlite:///{tiny_disk / 'idlehook.db'}"
    engine = make_engine(url, pool_size=1)
    migrate(engine)
    engine.dispose()
    store = StoreView(url)
    try:
        with processes(tmp_path) as procs:
            receiver = procs.serve(
                "receiver", base_env(tmp_path, url, IDLEHOOK_JOURNAL__ENABLED="false")
            )
            statuses: Counter[int] = Counter()
            acked: list[str] = []
            pad = "x" * 8000  # kept in the stored body: fills the disk in ~100 deliveries
            with httpx.Client(base_url=str(receiver.url), timeout=30) as http:
                for i in range(400):
                    payload = {**event(f"wevt_full_{i}", "sesn_full"), "pad": pad}
                    body, headers = signed(payload)
                    status = http.post(PATH, content=body, headers=headers).status_code
                    statuses[status] += 1
                    if status == 204:
                        acked.append(payload["id"])
                    if statuses[503] >= 10:
                        break
            assert statuses[503] >= 10, statuses
            assert set(statuses) <= {204, 503}, statuses
            wait_for(lambda: receiver.alive(), timeout=1)
            assert httpx.get(f"{receiver.url}/healthz", timeout=10).status_code == 200
        stored = store.event_ids()
        assert set(acked) == stored, "exactly the acknowledged deliveries are stored"
    finally:
        store.close()
