"""`kill -9` the receiver while Anthropic (the emulator) is delivering: every delivery that got
a 2xx is in the store, the rest are retried by the sender and land once; then a fresh worker
drains everything, each notification handled once."""

import time
from collections import Counter
from pathlib import Path
from typing import Any

from tests.reliability.support import (
    JOURNAL_ROUTES,
    PATH,
    StoreView,
    base_env,
    done_lines,
    emulator,
    free_port,
    launcher,
    processes,
    wait_for,
)

SESSIONS = 24


def test_receiver_killed_under_load_loses_nothing_acknowledged_and_drains_once(
    db_url: str, tmp_path: Path
) -> None:
    log = tmp_path / "journal.jsonl"
    store = StoreView(db_url)
    # Emulated backoff 5, 20, 80, 120... s at speed 40: retries span ~12 real seconds, longer
    # than the receiver is down.
    retrying: dict[str, Any] = {
        "speed": 40,
        "run_seconds": 2.0,
        "webhook_max_attempts": 7,
        "webhook_backoff_min_seconds": 5.0,
        "webhook_backoff_max_seconds": 120.0,
        "webhook_timeout_seconds": 40.0,
        # What this test checks is retries outliving the crash, not auto-disable: the ~20
        # failed deliveries in a row that disable an endpoint (the emulator's default, as the
        # API documents it) would otherwise be reached while the receiver is down.
        "disable_after_failed_deliveries": 1000,
    }
    try:
        with emulator(**retrying) as (emu, api_url), processes(tmp_path) as procs:
            env = base_env(tmp_path, db_url, base_url=api_url, journal=log, routes=JOURNAL_ROUTES)
            port = free_port()
            receiver = procs.serve("receiver", env, port=port)
            emu.apply_config({"webhook_urls": [f"{receiver.url}{PATH}"]})
            launch = launcher(api_url, "crash")

            launch(SESSIONS // 2)
            wait_for(lambda: len(delivered(emu)) >= 4, timeout=20)
            receiver.kill9()
            acked_before_kill = delivered(emu)
            launch(SESSIONS // 2)  # these webhooks hit a dead port and are retried
            time.sleep(0.5)  # let some attempts fail against the closed port
            restarted = procs.serve("receiver2", env, port=port)
            wait_for(lambda: emu.sender.pending() == 0, timeout=60)

            emitted = {e["id"] for e in emu.sender.emitted}
            acked = delivered(emu)
            stored = store.event_ids()
            failed_attempts = [a for a in emu.sender.attempts if a.outcome != "delivered"]
            assert failed_attempts, "the kill should have made some deliveries fail"
            assert acked_before_kill <= stored, "a 2xx was given for a row that is not stored"
            assert acked <= stored
            assert emitted == acked == stored, "the sender's retries landed every event"
            assert len(store.deliveries()) == len(stored)

            # Restart everything: the receiver again, plus a worker draining the backlog.
            restarted.kill9()
            procs.serve("receiver3", env, port=port)
            drain = procs.worker("drain", env, "--drain")
            assert drain.popen.wait(timeout=90) == 0, drain.tail()

        idled = [e["id"] for e in emu.sender.emitted if e["data"]["type"] == "session.status_idled"]
        assert len(idled) >= SESSIONS
        assert Counter(r["event_id"] for r in done_lines(log)) == Counter(idled)
        assert store.unfinished() == 0
    finally:
        store.close()


def delivered(emu: Any) -> set[str]:
    return {a.event_id for a in emu.sender.attempts if a.outcome == "delivered"}
