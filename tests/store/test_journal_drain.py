"""The drainer moves journaled deliveries into a real store (SQLite and PostgreSQL) once, with
one routing run each, waits out an outage, and sets aside what the store will never take."""

from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from store import journal_frames as frames
from store.engine import make_engine
from store.ingest import write_rows
from store.journal import Journal, scan_directory
from store.journal_drain import JournalDrainer
from store.unrecognised import Unrecognised
from tests.receiver.outage import store_down
from tests.store.test_journal import T0, row

ODD = Unrecognised("msg_odd", T0, b"\x00\xff raw", {"webhook-id": "msg_odd"}, 0, "body_not_utf8")


@pytest.fixture
def engine(db_url: str) -> Iterator[sa.Engine]:
    engine = make_engine(db_url, pool_size=2)
    yield engine
    engine.dispose()


def count(engine: sa.Engine, sql: str) -> int:
    with engine.connect() as conn:
        return int(conn.execute(sa.text(sql)).scalar_one())


async def test_journaled_deliveries_are_stored_once_with_one_routing_run(
    engine: sa.Engine, tmp_path: Path
) -> None:
    journal = Journal(tmp_path)
    woken: list[int] = []
    drainer = JournalDrainer(journal, engine, on_new=lambda: woken.append(1), batch=4)
    # wevt_0 is also in the store already: Anthropic retried it and the retry got through.
    write_rows(engine, [row(0)], T0)
    for n in range(10):
        await journal.append(row(n))
    await journal.append(row(3))  # journaled twice (the store's answer was lost)
    await journal.append(ODD)
    await journal.append(ODD)
    assert await drainer.drain_once()
    assert count(engine, "SELECT count(*) FROM deliveries") == 10
    assert count(engine, "SELECT count(*) FROM handler_runs") == 10  # one _route each
    assert count(engine, "SELECT sum(duplicates) FROM deliveries") == 2  # wevt_0, wevt_3
    assert count(engine, "SELECT count(*) FROM unrecognised_deliveries") == 1
    assert count(engine, "SELECT duplicates FROM unrecognised_deliveries") == 1
    assert (drainer.counts.stored, drainer.counts.duplicates) == (10, 3)
    assert woken  # the in-process worker was told
    assert journal.stats().depth == 0
    assert scan_directory(tmp_path).files == 0  # moved, then deleted
    # Idempotent: a second pass finds nothing.
    assert await drainer.drain_once()
    assert count(engine, "SELECT count(*) FROM deliveries") == 10
    journal.close()


async def test_an_outage_keeps_everything_and_the_next_pass_moves_it(
    db_url: str, engine: sa.Engine, tmp_path: Path
) -> None:
    journal = Journal(tmp_path)
    drainer = JournalDrainer(journal, engine)
    for n in range(5):
        await journal.append(row(n))
    with store_down(db_url):
        assert not await drainer.drain_once()
        assert journal.stats().depth == 5
        await journal.append(row(5))  # still taking appends meanwhile
    assert journal.stats().depth == 6
    assert await drainer.drain_once()
    assert count(engine, "SELECT count(*) FROM deliveries") == 6
    assert journal.stats().depth == 0
    journal.close()


async def test_a_record_no_store_will_take_is_set_aside_not_retried_forever(
    engine: sa.Engine, tmp_path: Path
) -> None:
    journal = Journal(tmp_path)
    await journal.append(row(1))
    await journal.seal()
    [segment] = journal.drainable()
    # A frame whose payload this version cannot read, between two good ones.
    with open(segment.path, "ab") as f:
        f.write(frames.encode(b'{"v": 99}'))
    segment.size = segment.path.stat().st_size
    segment.depth += 1
    await journal.append(row(2))
    drainer = JournalDrainer(journal, engine)
    assert await drainer.drain_once()
    assert count(engine, "SELECT count(*) FROM deliveries") == 2
    assert drainer.counts.rejected == 1
    [kept] = (tmp_path / "rejected").glob("*.journal")
    kept_frames = [f for f in frames.scan(kept.read_bytes()) if isinstance(f, frames.Frame)]
    assert [f.payload for f in kept_frames] == [b'{"v": 99}']
    journal.close()


@pytest.mark.postgres
async def test_postgres_refusing_a_row_sets_it_aside_and_stores_the_rest(
    postgres_url: str, tmp_path: Path
) -> None:
    engine = make_engine(postgres_url, pool_size=1)
    journal = Journal(tmp_path)
    try:
        too_long = ("wevt_" + "x" * 300, *row(7)[1:])  # over the column's 200 characters
        for record in (row(6), too_long, row(8)):
            await journal.append(record)
        drainer = JournalDrainer(journal, engine)
        assert await drainer.drain_once()
        assert count(engine, "SELECT count(*) FROM deliveries") == 2
        assert drainer.counts.rejected == 1
        assert journal.stats().depth == 0
    finally:
        journal.close()
        engine.dispose()
