"""Refused webhook requests are counted in memory and stored in one short transaction every
few seconds, never one per request: a flood of bad requests is no write load on the store."""

import asyncio
from datetime import UTC, datetime

import sqlalchemy as sa

from receiver.rejection_tally import RejectionTally
from store import rejections
from store.engine import make_engine


def test_a_flood_of_rejections_is_one_write_per_flush(sqlite_url: str) -> None:
    engine = make_engine(sqlite_url, pool_size=2)
    writes: list[int] = []
    sa.event.listen(engine, "begin", lambda _conn: writes.append(1))
    now = datetime.now(UTC)

    async def flood() -> None:
        tally = RejectionTally(engine, lambda: now, every=0.05)
        for _ in range(5000):
            tally.count("bad_signature", 401)
        tally.count("body_too_large", 413)
        assert writes == []  # nothing written on the request path
        for _ in range(200):  # the flush, within 5 s however loaded the machine
            if writes and not tally.counts and tally._flushing is None:
                break
            await asyncio.sleep(0.025)
        assert len(writes) == 1  # one flush for all of them
        for _ in range(3):
            tally.count("bad_signature", 401)
        await tally.close()  # a stopping receiver stores what it still counts, at once
        assert len(writes) == 2

    try:
        asyncio.run(flood())
        counted = {(r.reason, r.status): r.total for r in rejections.summary(engine, now)}
    finally:
        engine.dispose()
    assert counted == {("bad_signature", 401): 5003, ("body_too_large", 413): 1}


def test_what_the_store_cannot_take_is_kept_for_the_next_flush() -> None:
    # A database that cannot be opened (its directory does not exist): the flush fails.
    engine = make_engine("sqlite:////nonexistent-dir/idlehook.db", pool_size=1)
    now = datetime.now(UTC)

    async def down() -> dict[tuple[str, int], int]:
        tally = RejectionTally(engine, lambda: now, every=0.05)
        tally.count("bad_signature", 401)
        tally.count("bad_signature", 401)
        await tally.flush()
        await tally.close()
        return tally.counts

    try:
        assert asyncio.run(down()) == {("bad_signature", 401): 2}
    finally:
        engine.dispose()
