"""Launch fan-out: 5,000 launches against the emulator's 300/min create limit, time compressed.

The emulator runs `speed`x faster, so its 300 creates per emulated minute are 300*speed per real
minute; idlehook's pacer is given the same real-time budget. Counted at the emulator: creates
achieved per limit, 429s, and sessions per idempotency key (lost or doubled must be 0).
"""

import asyncio
import tempfile
import time
from collections import Counter
from pathlib import Path

import anthropic

from bench.common import save
from emulator import Emulator, EmulatorConfig, create_emulator
from idlehook import wiring
from idlehook.logs import configure_logging
from idlehook.settings import Settings, env_value
from sessions.launch_queue import LaunchDrainer
from sessions.launcher import LaunchRequest
from sessions.metadata import IDEMPOTENCY_KEY
from tests.support.servers import serve

LAUNCHES = int(str(env_value("BENCH_LAUNCHES", "5000")))
SPEED = float(str(env_value("BENCH_LAUNCH_SPEED", "15")))
LIMIT_PER_MIN = 300


async def launch_all(settings: Settings, agent: str, env: str) -> float:
    engine = wiring.open_engine(settings)
    async with wiring.api_client(settings, engine) as client:
        launcher = wiring.launcher(settings, engine, client)
        requests = [
            LaunchRequest(agent=agent, environment=env, message=f"job {i}", idempotency_key=f"k{i}")
            for i in range(LAUNCHES)
        ]
        for start in range(0, LAUNCHES, 500):
            await launcher.enqueue_many(requests[start : start + 500])
        drainer = LaunchDrainer(launcher, concurrency=32, poll_seconds=0.05)
        began = time.perf_counter()
        await drainer.run(drain=True)
        elapsed = time.perf_counter() - began
    engine.dispose()
    return elapsed


def main() -> None:
    configure_logging(json=True, level="WARNING")
    emu = Emulator(EmulatorConfig(speed=SPEED, run_seconds=3600.0))
    with tempfile.TemporaryDirectory() as tmp, serve(create_emulator(emulator=emu)) as url:
        client = anthropic.Anthropic(api_key="bench", base_url=url, max_retries=5)
        agent = client.beta.agents.create(name="fanout", model="claude-opus-4-7").id
        env = client.beta.environments.create(
            name="fanout", config={"type": "cloud", "networking": {"type": "limited"}}
        ).id
        # Let the bucket refill after setup, so the measured part starts from the same state.
        time.sleep(60 / SPEED)
        settings = Settings(
            database_url=f"sqlite:///{Path(tmp) / 'fanout.db'}",
            api_key="bench",
            base_url=url,
            owner="bench",
            create_rpm=int(LIMIT_PER_MIN * SPEED),
            read_rpm=int(600 * SPEED),
        )
        elapsed = asyncio.run(launch_all(settings, agent, env))
        keys = Counter(r.body["metadata"].get(IDEMPOTENCY_KEY) for r in emu.store.sessions.values())
        limit_per_s = LIMIT_PER_MIN * SPEED / 60
        figures = {
            "launches": LAUNCHES,
            "speed": SPEED,
            "seconds": elapsed,
            "achieved_per_emulated_min": LAUNCHES / elapsed * 60 / SPEED,
            "fraction_of_limit": LAUNCHES / elapsed / limit_per_s,
            "rate_limited_429": sum(emu.rate_limited.values()),
            "lost": sum(1 for i in range(LAUNCHES) if keys[f"k{i}"] == 0),
            "doubled": sum(1 for i in range(LAUNCHES) if keys[f"k{i}"] > 1),
        }
    print(
        f"{LAUNCHES} launches in {elapsed:.1f} s at {SPEED:g}x: "
        f"{figures['achieved_per_emulated_min']:.0f}/min of {LIMIT_PER_MIN}/min "
        f"= {figures['fraction_of_limit']:.1%} of the limit; 429s {figures['rate_limited_429']}; "
        f"lost {figures['lost']}, doubled {figures['doubled']}"
    )
    save("fanout", figures)


if __name__ == "__main__":
    main()
