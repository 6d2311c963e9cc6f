"""A fan-out of 1,000 launches through two workers' drainers: at the limit, no 429, none lost
or doubled. The emulator runs at speed 15 (its minute lasts 4 real seconds) with the API's own
create limit of 300 per minute, i.e. 75 creates per real second; both drainers' clients share one
store-backed budget set just under it."""

import asyncio
from collections import Counter

import pytest
from sqlmodel import Session, select

from sessions.launch_queue import LaunchDrainer
from sessions.launcher import Launcher, LaunchRequest
from sessions.pacing import Pacer
from store.engine import make_engine
from store.models import Launch
from tests.sessions.paced import paced_client
from tests.sessions.test_launch_helpers import API_KEY, world

SPEED = 15.0
CREATE_PER_MINUTE = 300
# Pace a little under the limit: the emulator counts arrivals in a sliding window, and
# loopback jitter can bring two evenly spaced requests closer together.
HEADROOM = 0.85
LAUNCHES = 1000


@pytest.mark.slow
async def test_a_thousand_launches_at_the_limit_without_429s(postgres_url: str) -> None:
    config = {
        "speed": SPEED,
        "rate_limits": {"create_per_minute": CREATE_PER_MINUTE, "read_per_minute": 100_000},
    }
    rpm = {"create": CREATE_PER_MINUTE * SPEED * HEADROOM, "read": 100_000 * SPEED * HEADROOM}
    with world(**config) as w:
        engines = [make_engine(postgres_url, pool_size=8) for _ in range(2)]
        try:
            launchers = [
                Launcher(
                    engine,
                    paced_client(w.url, Pacer(engine, rpm, block=4), api_key=API_KEY),
                    owner="burst",
                )
                for engine in engines
            ]
            requests = [
                LaunchRequest(
                    agent=w.agent_id,
                    environment=w.limited_env,
                    message=f"job {i}",
                    idempotency_key=f"burst-{i}",
                )
                for i in range(LAUNCHES)
            ]
            await launchers[0].enqueue_many(requests[: LAUNCHES // 2])
            await launchers[1].enqueue_many(requests[LAUNCHES // 2 :])
            # Re-sending part of the batch is a no-op: same keys, same launches.
            again = await launchers[1].enqueue_many(requests[:100])
            assert not any(r.new for r in again)

            drainers = [LaunchDrainer(lr, concurrency=24, poll_seconds=0.05) for lr in launchers]
            await asyncio.wait_for(asyncio.gather(*(d.run(drain=True) for d in drainers)), 120)
        finally:
            for engine in engines:
                engine.dispose()

        assert sum(w.emu.rate_limited.values()) == 0
        assert w.session_creates() == LAUNCHES
        keys = Counter(
            s.body["metadata"]["idlehook_idempotency_key"] for s in w.emu.store.sessions.values()
        )
        assert len(keys) == LAUNCHES
        assert max(keys.values()) == 1

    engine = make_engine(postgres_url, pool_size=1)
    try:
        with Session(engine) as db:
            launches = list(db.exec(select(Launch)))
    finally:
        engine.dispose()
    assert len(launches) == LAUNCHES
    assert {launch.state for launch in launches} == {"created"}
    assert len({launch.session_id for launch in launches}) == LAUNCHES
