"""`kill -9` a worker in the middle of its handlers: the runs come back after their leases
expire, on another worker, and the outside world sees each one applied exactly once."""

from collections import Counter
from pathlib import Path

import httpx

from store.models import RunState
from tests.reliability.support import (
    JOURNAL_ROUTES,
    PATH,
    StoreView,
    base_env,
    done_lines,
    emulator,
    event,
    journal,
    processes,
    signed,
    wait_for,
)

EVENTS = 6


def test_worker_killed_mid_handler_is_retried_after_its_lease_and_applied_once(
    db_url: str, tmp_path: Path
) -> None:
    log = tmp_path / "journal.jsonl"
    store = StoreView(db_url)
    try:
        with emulator() as (_, api_url), processes(tmp_path) as procs:
            env = base_env(
                tmp_path,
                db_url,
                base_url=api_url,
                journal=log,
                routes=JOURNAL_ROUTES,
                lease_seconds=2.0,
            )
            receiver = procs.serve("receiver", env)
            # Holds every handler far longer than the lease: only the heartbeat keeps it.
            doomed = procs.worker("doomed", {**env, "RELIABILITY_HOLD_SECONDS": "60"})
            ids = [f"wevt_crash_{i}" for i in range(EVENTS)]
            with httpx.Client(base_url=str(receiver.url), timeout=10) as http:
                for i, event_id in enumerate(ids):
                    body, headers = signed(event(event_id, f"sesn_crash_{i}"))
                    assert http.post(PATH, content=body, headers=headers).status_code == 204

            def started() -> set[str]:
                return {r["event_id"] for r in journal(log) if r["phase"] == "start"}

            wait_for(lambda: started() == set(ids), timeout=30)
            # Outlived several lease periods: the heartbeat kept every lease while alive.
            assert all(r.state == RunState.RUNNING for r in store.runs("journal"))
            doomed.kill9()
            assert not done_lines(log)

            rescuer = procs.worker("rescuer", {**env, "RELIABILITY_HOLD_SECONDS": "0.1"})
            wait_for(lambda: len(done_lines(log)) >= EVENTS and store.unfinished() == 0, 30)
            rescuer.popen.terminate()
            rescuer.popen.wait(timeout=15)

        done = Counter(r["event_id"] for r in done_lines(log))
        assert done == Counter(ids), "each handler applied exactly once"
        assert {r["pid"] for r in done_lines(log)} == {rescuer.pid}
        runs = store.runs("journal")
        assert len(runs) == EVENTS
        assert all(r.state == RunState.SUCCEEDED and r.attempts == 2 for r in runs)
    finally:
        store.close()
