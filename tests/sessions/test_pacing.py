"""The store-backed rate gate: distinct, evenly spaced slots across processes, on both engines."""

import asyncio
import itertools
import threading

import pytest

from sessions.pacing import Pacer
from store.engine import make_engine


class FakeClock:
    def __init__(self, start: float = 1_000_000.0) -> None:
        self.t = start
        self.slept: list[float] = []

    def now(self) -> float:
        return self.t

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)


@pytest.fixture
def engines(db_url: str):
    # Two engines, two connection pools: as two worker processes would hold.
    first, second = make_engine(db_url, pool_size=4), make_engine(db_url, pool_size=4)
    yield first, second
    first.dispose()
    second.dispose()


def test_two_pacers_hand_out_distinct_slots_at_the_rate(engines) -> None:
    rpm = 60_000.0  # one slot per millisecond
    interval = 60.0 / rpm
    pacers = [Pacer(engines[0], {"create": rpm}), Pacer(engines[1], {"create": rpm})]
    slots: list[float] = []
    lock = threading.Lock()

    def take(pacer: Pacer) -> None:
        for _ in range(60):
            slot = pacer.take_slot("create")
            with lock:
                slots.append(slot)

    threads = [threading.Thread(target=take, args=(p,)) for p in pacers for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert len(slots) == 240
    assert len(set(slots)) == 240
    ordered = sorted(slots)
    gaps = [b - a for a, b in itertools.pairwise(ordered)]
    # However the callers interleave, no two slots are closer than one interval: at most
    # `rpm` requests start in any minute.
    assert min(gaps) >= interval - 1e-6


async def test_acquire_sleeps_until_its_own_slot(engines) -> None:
    clock = FakeClock()
    pacer = Pacer(engines[0], {"create": 300}, now=clock.now, sleep=clock.sleep)
    for _ in range(4):
        await pacer.acquire("create")
    # The first caller goes at once; each later one waits one more interval (0.2 s).
    assert clock.slept == pytest.approx([0.2, 0.4, 0.6])


async def test_classes_do_not_share_a_budget(engines) -> None:
    clock = FakeClock()
    pacer = Pacer(engines[0], {"create": 60, "read": 60}, now=clock.now, sleep=clock.sleep)
    await pacer.acquire("create")
    await pacer.acquire("read")
    assert clock.slept == []


async def test_penalise_holds_every_caller_back(engines) -> None:
    clock = FakeClock()
    first = Pacer(engines[0], {"create": 600}, now=clock.now, sleep=clock.sleep)
    second = Pacer(engines[1], {"create": 600}, now=clock.now, sleep=clock.sleep)
    await first.acquire("create")
    await first.penalise("create", 7.5)
    await second.acquire("create")
    assert clock.slept == pytest.approx([7.5])
    # A shorter penalty never pulls the gate back in.
    await first.penalise("create", 1.0)
    await second.acquire("create")
    assert clock.slept[-1] == pytest.approx(7.6)


async def test_an_idle_gate_does_not_bank_a_burst(engines) -> None:
    clock = FakeClock()
    pacer = Pacer(engines[0], {"create": 60}, now=clock.now, sleep=clock.sleep)
    await pacer.acquire("create")
    clock.t += 3600  # an hour of silence
    await pacer.acquire("create")
    await pacer.acquire("create")
    assert clock.slept == pytest.approx([1.0])


async def test_concurrent_acquires_in_one_loop_are_spaced(engines) -> None:
    clock = FakeClock()
    pacer = Pacer(engines[0], {"read": 120}, now=clock.now, sleep=clock.sleep)
    await asyncio.gather(*(pacer.acquire("read") for _ in range(5)))
    assert sorted(clock.slept) == pytest.approx([0.5, 1.0, 1.5, 2.0])


def test_bad_configuration_is_refused(engines) -> None:
    with pytest.raises(ValueError, match="positive"):
        Pacer(engines[0], {"create": 0})
    pacer = Pacer(engines[0], {"create": 300})
    with pytest.raises(ValueError, match="unknown rate class 'write'"):
        pacer.take_slot("write")
