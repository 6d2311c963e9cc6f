"""API faults from the emulator: 429 storms, 5xx, slow pages. The handlers and the reaper back
off and finish; nothing is marked done that was not done."""

import asyncio
import json
from pathlib import Path
from typing import Any

import anthropic
from sqlmodel import Session, select

from emulator import Emulator
from handlers.config import WorkerSettings
from idlehook import wiring
from store.models import RunState, TrackedSession
from tests.reliability.support import SECRET, TOKEN, StoreView
from tests.support.servers import wait_for
from tests.support.stack import emulator_and_service

FAULTS = {"error_429": 0.2, "error_5xx": 0.2, "slow_page_seconds": 2.0}


def test_handlers_and_reaper_ride_out_429_storms_5xx_and_slow_pages(
    db_url: str, tmp_path: Path
) -> None:
    store = StoreView(db_url)
    try:
        with emulator_and_service(
            db_url,
            tmp_path,
            secret=SECRET,
            token=TOKEN,
            owner="faults",
            # Turns last 100 emulated seconds (2 s real): the storm below is on before any
            # session idles, so every fetch the handlers make may fail.
            emulator_config={"rate_limits": {"enabled": False}, "run_seconds": 100.0},
            worker=WorkerSettings(
                poll_seconds=0.1, backoff_base_seconds=0.1, backoff_max_seconds=1.0, max_attempts=30
            ),
        ) as running:
            emu, settings, svc = running.emulator, running.settings, running.svc
            client = running.client(max_retries=5)
            agent, env = running.agent_and_environment("f", client)
            ids = [
                running.start_session(agent, env, f"job {i}", {"emulator_script": "tools"})
                for i in range(4)
            ]
            # The storm starts once the sessions exist: every fetch from here on may fail.
            emu.apply_config({"api_faults": FAULTS})

            def archived(sid: str) -> bool:
                return (settings.results_dir / sid / "result.json").exists()

            wait_for(lambda: all(archived(s) for s in ids) and store.unfinished() == 0, 90)
            injected = dict(emu.faults_injected)
            assert sum(injected.values()) >= 1, injected  # the storm really hit

            for sid in ids:
                result = json.loads((settings.results_dir / sid / "result.json").read_text())
                assert result["session_id"] == sid
                lines = (settings.results_dir / sid / "events.jsonl").read_text().splitlines()
                emu.apply_config({"api_faults": {"error_429": 0, "error_5xx": 0}})
                listed = [e.id for e in client.beta.sessions.events.list(sid)]
                emu.apply_config({"api_faults": FAULTS})
                assert [json.loads(line)["id"] for line in lines] == listed  # complete
            archive_runs = [r for r in store.runs("archive")]
            assert len(archive_runs) == len(ids)
            assert all(r.state == RunState.SUCCEEDED for r in archive_runs)
            retried = sum(r.attempts - 1 for r in store.runs())

            # The reaper, in the same storm: retries sweeps until every session is gone.
            async def reap() -> Any:
                async with wiring.api_client(settings, svc.engine, max_retries=2) as api:
                    policy = wiring.reap_policy(settings, idle_for="0s")
                    return await wiring.reaper(settings, svc.engine, api, policy).run()

            sweeps = aborted = 0
            while sweeps < 15 and not all(gone(client, emu, sid) for sid in ids):
                sweeps += 1
                try:
                    asyncio.run(reap())
                except anthropic.APIStatusError:
                    # A 5xx that outlasts the SDK's retries aborts the sweep before it
                    # deletes anything; the service's Periodic runs the next one.
                    aborted += 1
            assert all(gone(client, emu, sid) for sid in ids)
            with Session(svc.engine) as db:
                tracked = {t.id: t for t in db.exec(select(TrackedSession)).all()}
            for sid in ids:
                # Deleted only after its result was saved, and recorded as deleted.
                assert tracked[sid].result_captured_at is not None
                assert tracked[sid].deleted_at is not None
            print(
                f"injected={injected} retried_runs={retried}"
                f" reaper_sweeps={sweeps} aborted={aborted}"
            )
    finally:
        store.close()


def gone(client: anthropic.Anthropic, emu: Emulator, sid: str) -> bool:
    saved = emu.config.api_faults
    emu.apply_config({"api_faults": {"error_429": 0, "error_5xx": 0}})
    try:
        client.beta.sessions.retrieve(sid)
        return False
    except anthropic.NotFoundError:
        return True
    finally:
        emu.apply_config({"api_faults": saved.model_dump()})
