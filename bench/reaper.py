"""Reaper: 10,000 sessions to inspect under the 600/min API limit, time compressed.

Half are ours, idle and saved (to delete); half carry `keep=true` (to leave). Counted at the
emulator: API calls by kind, 429s, and deletes per emulated minute against the limit.
"""

import asyncio
import tempfile
import time
from pathlib import Path

import anthropic
import httpx

from bench.common import emulator_process, save
from idlehook import wiring
from idlehook.logs import configure_logging
from idlehook.settings import ReaperSettings, Settings, env_value
from store import sessions as tracked_sessions
from store.models import utcnow

SESSIONS = int(str(env_value("BENCH_REAP_SESSIONS", "10000")))
SPEED = float(str(env_value("BENCH_REAP_SPEED", "60")))
READ_LIMIT = 600


async def create_sessions(url: str) -> list[str]:
    async with anthropic.AsyncAnthropic(api_key="b", base_url=url, max_retries=5) as client:
        agent = (await client.beta.agents.create(name="reap", model="claude-opus-4-7")).id
        env = (await client.beta.environments.create(name="reap", config={"type": "cloud"})).id
        ids: list[str] = []
        sem = asyncio.Semaphore(32)

        async def one(i: int) -> None:
            meta = {"idlehook_owner": "bench"} | ({"keep": "true"} if i % 2 else {})
            async with sem:
                s = await client.beta.sessions.create(
                    agent=agent, environment_id=env, metadata=meta
                )
            if not i % 2:
                ids.append(s.id)

        await asyncio.gather(*(one(i) for i in range(SESSIONS)))
        return ids


async def reap(settings: Settings) -> tuple[float, int]:
    engine = wiring.open_engine(settings)
    async with wiring.api_client(settings, engine) as client:
        the_reaper = wiring.reaper(settings, engine, client, wiring.reap_policy(settings))
        began = time.perf_counter()
        report = await the_reaper.run()
        elapsed = time.perf_counter() - began
    engine.dispose()
    deleted = sum(1 for o in report.outcomes if str(o.action) == "deleted")
    return elapsed, deleted


def main() -> None:
    configure_logging(json=True, level="WARNING")
    # The emulator in a process of its own: in this one it took the CPU the reaper needs, and
    # the run measured the interpreter, not the pacing.
    with (
        tempfile.TemporaryDirectory() as tmp,
        emulator_process("--speed", str(SPEED), "--no-rate-limits") as url,
    ):
        ours = asyncio.run(create_sessions(url))
        settings = Settings(
            database_url=f"sqlite:///{Path(tmp) / 'reap.db'}",
            api_key="bench",
            base_url=url,
            owner="bench",
            read_rpm=int(READ_LIMIT * SPEED),
            create_rpm=int(300 * SPEED),
            reaper=ReaperSettings(idle_for="0s"),
        )
        engine = wiring.open_engine(settings)
        now = utcnow()
        with engine.begin() as conn:  # results saved: the reaper may delete these
            for sid in ours:
                tracked_sessions.mark(conn, sid, now, result_captured=True, transcript_saved=True)
        engine.dispose()
        time.sleep(2)  # every session idle for a while, on the emulated clock too
        httpx.put(url + "/_emulator/config", json={"rate_limits": {"enabled": True}})
        before = httpx.get(url + "/_emulator/stats").json()
        elapsed, deleted = asyncio.run(reap(settings))
        after = httpx.get(url + "/_emulator/stats").json()
        was = before["requests"]
        calls = {k: v - was.get(k, 0) for k, v in after["requests"].items() if v != was.get(k, 0)}
        emulated_min = elapsed * SPEED / 60
        figures = {
            "sessions": SESSIONS,
            "speed": SPEED,
            "deleted": deleted,
            "expected_deletes": len(ours),
            "api_calls": sum(calls.values()),
            "calls_by_route": calls,
            "rate_limited_429": after["total_rate_limited"] - before["total_rate_limited"],
            "seconds": elapsed,
            "emulated_minutes": emulated_min,
            "calls_per_emulated_min": sum(calls.values()) / emulated_min,
            "deletes_per_emulated_min": deleted / emulated_min,
            "deletes_fraction_of_limit": deleted / emulated_min / READ_LIMIT,
            "calls_fraction_of_limit": sum(calls.values()) / emulated_min / READ_LIMIT,
        }
    print(
        f"reaper: {SESSIONS} sessions inspected, {deleted}/{len(ours)} deleted, "
        f"{figures['api_calls']} API calls, {figures['rate_limited_429']} 429s, "
        f"{elapsed:.1f} s at {SPEED:g}x = {emulated_min:.1f} emulated min; "
        f"{figures['calls_per_emulated_min']:.0f} calls/min "
        f"({figures['calls_fraction_of_limit']:.0%} of {READ_LIMIT}); "
        f"{figures['deletes_per_emulated_min']:.0f} deletes/min "
        f"({figures['deletes_fraction_of_limit']:.0%} of the limit)"
    )
    print(f"calls by route: {calls}")
    save("reaper", figures)


if __name__ == "__main__":
    main()
