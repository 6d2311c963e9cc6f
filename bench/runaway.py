"""Runaway control: what `[reaper] max_running` saves, measured against letting runs go on.

Sessions are launched with scripted run lengths: most finish in a minute of emulated time, some
are runaways scripted to run for hours. Nobody waits on any of them. One reaper pass with
`max_running` interrupts the runaways; the emulator's ledger knows how long each scripted run
would have gone on, so the runtime and dollars avoided are read from it, under both billing
models, with the API calls the reaper spent per session it stopped.
"""

import asyncio
import tempfile
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import anthropic
import httpx

from bench.common import emulator_process, save
from idlehook import wiring
from idlehook.logs import configure_logging
from idlehook.settings import ReaperSettings, Settings, env_value

SESSIONS = int(str(env_value("BENCH_RUNAWAY_SESSIONS", "60")))
RUNAWAY_EVERY = 4  # one session in four never stops by itself
SPEED = 600.0  # emulated seconds per wall second
RUNAWAY_SECONDS = 6 * 3600  # scripted: six emulated hours
# Session timestamps are wall-clock time, so the limit is too: 3 s of wall time at 600x is
# half an emulated hour of running.
MAX_RUNNING = timedelta(seconds=3)


async def launch(url: str) -> tuple[list[str], list[str]]:
    async with anthropic.AsyncAnthropic(api_key="b", base_url=url, max_retries=5) as client:
        agent = (await client.beta.agents.create(name="runaway", model="claude-opus-4-7")).id
        env = (await client.beta.environments.create(name="runaway")).id
        runaways: list[str] = []
        finished: list[str] = []

        async def one(i: int) -> None:
            runaway = i % RUNAWAY_EVERY == 0
            seconds = RUNAWAY_SECONDS if runaway else 60
            session = await client.beta.sessions.create(
                agent=agent,
                environment_id=env,
                metadata={
                    "idlehook_owner": "bench",
                    "emulator_script": "long:6",
                    "emulator_run_seconds": str(seconds),
                },
                initial_events=[
                    {"type": "user.message", "content": [{"type": "text", "text": "go"}]}
                ],
            )
            (runaways if runaway else finished).append(session.id)

        await asyncio.gather(*(one(i) for i in range(SESSIONS)))
        return runaways, finished


async def reap(settings: Settings) -> tuple[float, Any]:
    engine = wiring.open_engine(settings)
    try:
        async with wiring.api_client(settings, engine) as client:
            policy = wiring.reap_policy(settings)
            archive = wiring.archiver(settings, engine, client)
            the_reaper = wiring.reaper(settings, engine, client, policy, archive)
            began = time.perf_counter()
            report = await the_reaper.run()
            return time.perf_counter() - began, report
    finally:
        engine.dispose()


def billing(url: str, model: str) -> dict[str, Any]:
    return dict(httpx.get(url + "/_emulator/billing", params={"model": model}).json())


def main() -> None:
    configure_logging(json=True, level="WARNING")
    with (
        tempfile.TemporaryDirectory() as tmp,
        emulator_process("--speed", str(SPEED), "--no-rate-limits") as url,
    ):
        runaways, _finished = asyncio.run(launch(url))
        time.sleep(MAX_RUNNING.total_seconds() + 1)  # the runaways are now over the limit
        settings = Settings(
            database_url=f"sqlite:///{Path(tmp) / 'runaway.db'}",
            results_dir=Path(tmp) / "results",
            api_key="bench",
            base_url=url,
            owner="bench",
            # Time compressed like the emulator: the reaper's pacing is the API's limit at
            # SPEED x, so its wall seconds map onto emulated ones as the runs' do.
            read_rpm=int(600 * SPEED),
            create_rpm=int(300 * SPEED),
            reaper=ReaperSettings(
                max_running=f"{int(MAX_RUNNING.total_seconds())}s",
                interrupt_wait_seconds=10.0,
            ),
        )
        wiring.open_engine(settings).dispose()  # migrate before the clock starts
        before = httpx.get(url + "/_emulator/stats").json()["requests"]
        elapsed, report = asyncio.run(reap(settings))
        after = httpx.get(url + "/_emulator/stats").json()["requests"]
        calls = {k: v - before.get(k, 0) for k, v in after.items() if v != before.get(k, 0)}
        time.sleep(1)  # a stopped run must stay stopped: the ledger keeps not growing
        running, exists = billing(url, "running"), billing(url, "exists")

    stopped = [o.session_id for o in report.outcomes if str(o.action) == "interrupted"]
    rows = {r["session_id"]: r for r in running["sessions"]}
    billed_s = sum(float(rows[sid]["running_seconds"]) for sid in runaways)
    avoided_s = sum(float(rows[sid]["avoided_running_seconds"]) for sid in runaways)
    avoided_tokens = sum(float(rows[sid]["avoided_token_usd"]) for sid in runaways)
    rate = float(running["rate_usd_per_container_hour"])
    figures = {
        "sessions": SESSIONS,
        "runaways": len(runaways),
        "interrupted": len(stopped),
        "wrongly_interrupted": len(set(stopped) - set(runaways)),
        "speed": SPEED,
        "max_running_emulated_minutes": MAX_RUNNING.total_seconds() * SPEED / 60,
        "reaper_seconds": elapsed,
        "api_calls": sum(calls.values()),
        "api_calls_per_session_examined": sum(calls.values()) / SESSIONS,
        "calls_by_route": calls,
        "runaway_runtime_billed_hours": billed_s / 3600,
        "runaway_runtime_if_let_run_hours": (billed_s + avoided_s) / 3600,
        "runaway_runtime_avoided_hours": avoided_s / 3600,
        "runtime_usd_avoided_running_model": avoided_s / 3600 * rate,
        "token_usd_avoided": avoided_tokens,
        "runtime_usd_avoided_exists_model": float(exists["total_avoided_runtime_usd"]),
        "saving_usd_per_hour_reported": report.saving_usd_per_hour,
        "billing_model": report.billing_model,
    }
    print(
        f"runaway: {len(stopped)}/{len(runaways)} runaways interrupted "
        f"({figures['wrongly_interrupted']} others touched) in {elapsed:.1f} s, "
        f"{figures['api_calls']} API calls ({figures['api_calls_per_session_examined']:.1f} per "
        f"session examined); runaway runtime {figures['runaway_runtime_billed_hours']:.2f} h "
        f"billed instead of {figures['runaway_runtime_if_let_run_hours']:.2f} h: "
        f"{figures['runaway_runtime_avoided_hours']:.2f} h = "
        f"${figures['runtime_usd_avoided_running_model']:.2f} runtime + "
        f"${avoided_tokens:.2f} tokens avoided (billing model: running; under 'exists' an "
        f"interrupt avoids ${figures['runtime_usd_avoided_exists_model']:.2f})"
    )
    print(f"calls by route: {calls}")
    save("runaway", figures)


if __name__ == "__main__":
    main()
