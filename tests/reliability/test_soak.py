"""Soak: steady launches and deliveries through a real `idlehook serve` process with faults on
(duplicate webhooks, reordering, 429s and 5xx from the API), for IDLEHOOK_SOAK_SECONDS (20 s by
default; set it longer locally). Ends with the counts reconciled and the memory flat."""

import statistics
import time
from pathlib import Path

import anthropic
import httpx
import pytest
from sqlmodel import Session, select

from idlehook.settings import env_value
from store.models import RunState, Source, TrackedSession
from tests.reliability.support import (
    TOKEN,
    StoreView,
    base_env,
    emulator,
    processes,
    rss_kib,
    wait_for,
)

SOAK_SECONDS = float(env_value("IDLEHOOK_SOAK_SECONDS") or "20")


@pytest.mark.slow
def test_soak_with_faults_reconciles_sent_stored_processed_and_memory_stays_flat(
    sqlite_url: str, tmp_path: Path
) -> None:
    store = StoreView(sqlite_url)
    faults = {"duplicate": 0.3, "reorder_window": 3, "reorder_max_hold_seconds": 2.0}
    try:
        with emulator(faults=faults) as (emu, api_url), processes(tmp_path) as procs:
            env = base_env(tmp_path, sqlite_url, base_url=api_url)
            serve = procs.serve("serve", env, worker=True)
            emu.apply_config({"webhook_urls": [f"{serve.url}/webhooks/anthropic"]})
            client = anthropic.Anthropic(api_key="k", base_url=api_url, max_retries=3)
            agent = client.beta.agents.create(name="soak", model="claude-opus-4-7")
            environment = client.beta.environments.create(
                name="soak", config={"type": "cloud", "networking": {"type": "limited"}}
            )
            emu.apply_config({"api_faults": {"error_429": 0.05, "error_5xx": 0.05}})

            launched: list[str] = []
            rss: list[int] = []
            deadline = time.monotonic() + SOAK_SECONDS
            with httpx.Client(base_url=str(serve.url), timeout=30) as http:
                while time.monotonic() < deadline:
                    response = http.post(
                        "/sessions",
                        headers={"authorization": f"Bearer {TOKEN}"},
                        json={
                            "agent": agent.id,
                            "environment": environment.id,
                            "message": f"soak {len(launched)}",
                            "metadata": {"emulator_script": "end_turn"},
                        },
                    )
                    assert response.status_code == 201, response.text
                    launched.append(response.json()["session_id"])
                    rss.append(rss_kib(serve.pid))
                    time.sleep(0.25)

            def harvested() -> bool:
                with Session(store.engine) as db:
                    rows = db.exec(select(TrackedSession)).all()
                done = {t.id for t in rows if t.result_captured_at is not None}
                return set(launched) <= done

            wait_for(
                lambda: emu.sender.pending() == 0 and harvested() and store.unfinished() == 0,
                timeout=120,
                interval=0.2,
            )
            assert serve.alive()
            final_rss = rss_kib(serve.pid)

        sent = {e["id"] for e in emu.sender.emitted}
        webhooks = [d for d in store.deliveries() if d.source == Source.WEBHOOK]
        stored = {d.event_id for d in webhooks}
        routes = store.runs("_route")
        assert sent == stored, "sent = stored"
        assert len(routes) == len(store.deliveries())
        assert all(r.state == RunState.SUCCEEDED for r in store.runs()), "processed, none dead"
        archives = [r for r in store.runs("archive") if r.state == RunState.SUCCEEDED]
        assert len(archives) == len(launched), "each session archived once, no orphan left"

        # Memory: the second half of the run may not grow much past the first half.
        half = len(rss) // 2
        early, late = statistics.median(rss[:half]), statistics.median([*rss[half:], final_rss])
        print(
            f"soak: {SOAK_SECONDS:.0f}s launched={len(launched)} sent={len(sent)} "
            f"duplicates={sum(d.duplicates for d in webhooks)} runs={len(store.runs())} "
            f"rss_kib early={early:.0f} late={late:.0f} final={final_rss}"
        )
        assert late <= early * 1.25 + 8192, (early, late)
    finally:
        store.close()
