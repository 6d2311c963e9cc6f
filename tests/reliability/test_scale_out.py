"""Scale-out on PostgreSQL: three receivers and three workers as separate processes on one
database, a flood of deliveries with every event sent twice to different receivers.

Held: every event stored once and processed once, each session's events handled one at a time
in the order they were sent, and no lease taken from a live worker (each run one attempt)."""

from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import anthropic
import httpx
import pytest

from store.models import RunState
from tests.reliability.support import (
    JOURNAL_ROUTES,
    PATH,
    StoreView,
    base_env,
    emulator,
    event,
    journal,
    processes,
    signed,
    wait_for,
)

SESSIONS = 16
EVENTS_PER_SESSION = 6


@pytest.mark.postgres
def test_three_receivers_three_workers_process_each_event_once_in_session_order(
    postgres_url: str, tmp_path: Path
) -> None:
    log = tmp_path / "journal.jsonl"
    store = StoreView(postgres_url)
    try:
        with emulator() as (_, api_url), processes(tmp_path) as procs:
            env = base_env(
                tmp_path,
                postgres_url,
                base_url=api_url,
                journal=log,
                routes=JOURNAL_ROUTES,
                lease_seconds=3.0,
                RELIABILITY_HOLD_SECONDS="0.02",
            )
            receivers = [procs.serve(f"receiver{i}", env) for i in range(3)]
            workers = [procs.worker(f"worker{i}", env, "--concurrency", "4") for i in range(3)]
            sent: dict[str, list[str]] = {}
            # Real sessions, idle in the emulator: the routing step fetches each one (an idle
            # notification is checked for staleness) and must find it idle, not gone.
            api = anthropic.Anthropic(api_key="k", base_url=api_url, max_retries=5)
            agent = api.beta.agents.create(name="scale", model="claude-opus-4-7")
            env_id = api.beta.environments.create(
                name="scale", config={"type": "cloud", "networking": {"type": "limited"}}
            ).id
            ids = [
                api.beta.sessions.create(agent=agent.id, environment_id=env_id).id
                for _ in range(SESSIONS)
            ]

            def flood(session: int) -> None:
                sid = ids[session]
                sent[sid] = []
                with httpx.Client(timeout=30) as http:
                    for n in range(EVENTS_PER_SESSION):
                        event_id = f"wevt_scale_{session}_{n}"
                        body, headers = signed(event(event_id, sid))
                        # The same event twice, through two different receivers, in sequence.
                        for copy in range(2):
                            url = str(receivers[(session + n + copy) % 3].url) + PATH
                            response = http.post(url, content=body, headers=headers)
                            assert response.status_code == 204, response.text
                        sent[sid].append(event_id)

            with ThreadPoolExecutor(max_workers=8) as pool:
                list(pool.map(flood, range(SESSIONS)))

            total = SESSIONS * EVENTS_PER_SESSION
            wait_for(lambda: store.settled(total), timeout=90)
            assert all(w.alive() for w in workers), "no worker died on the way"

        lines = journal(log)
        starts = Counter(r["event_id"] for r in lines if r["phase"] == "start")
        dones = Counter(r["event_id"] for r in lines if r["phase"] == "done")
        every = {e for ids in sent.values() for e in ids}
        assert len(every) == total
        assert starts == dones == Counter(every), "each event handled exactly once"
        assert len({r["pid"] for r in lines}) > 1, "the work spread over several workers"

        deliveries = store.deliveries()
        assert len(deliveries) == total
        assert sum(d.duplicates for d in deliveries) == total  # every copy recognised

        by_session: dict[str, list[dict[str, object]]] = defaultdict(list)
        for r in lines:
            by_session[str(r["session_id"])].append(r)
        for sid, events in sent.items():
            seen = by_session[sid]
            # One at a time: start, done, start, done ... and in the order sent.
            assert [r["phase"] for r in seen] == ["start", "done"] * EVENTS_PER_SESSION
            assert [r["event_id"] for r in seen[::2]] == events

        runs = store.runs("journal")
        assert len(runs) == total
        assert all(r.state == RunState.SUCCEEDED and r.attempts == 1 for r in runs)
        routes = store.runs("_route")
        assert all(r.state == RunState.SUCCEEDED and r.attempts == 1 for r in routes)
    finally:
        store.close()
