"""The local journal's files: framing, torn tails, the size bound, and segments left by a process
that died (a real child process, killed with SIGKILL, its flock dropped by the kernel)."""

import asyncio
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from store import journal_frames as frames
from store import journal_records as records
from store.ingest import Row
from store.journal import Journal, JournalUnavailable, scan_directory, store_key
from store.unrecognised import Unrecognised

REPO = Path(__file__).resolve().parents[2]
T0 = 1_795_000_000.25


def row(n: int, received: float = T0) -> Row:
    return (
        f"wevt_{n}",
        "session.status_idled",
        f"sesn_{n % 3}",
        f"sesn_{n % 3}",
        received - 2.0,
        received,
        f'{{"type": "event", "id": "wevt_{n}"}}',
        {"webhook-id": f"wevt_{n}"},
        0,
        "webhook",
    )


ODD = Unrecognised("msg_odd", T0 + 1, b"\xff\xfe not even utf-8", {"webhook-id": "msg_odd"}, 1, "x")


# -- frames and records (pure) ----------------------------------------------------------------


def test_frames_round_trip_and_a_torn_tail_is_skipped_at_every_cut() -> None:
    payloads = [b"first", b"", b"x" * 1000, b"last one"]
    data = b"".join(frames.encode(p) for p in payloads)
    assert [f.payload for f in frames.scan(data) if isinstance(f, frames.Frame)] == payloads
    whole = len(data) - len(frames.encode(b"last one"))
    for cut in range(whole + 1, len(data)):  # every byte of the last frame missing in turn
        items = list(frames.scan(data[:cut]))
        kept = [f.payload for f in items if isinstance(f, frames.Frame)]
        assert kept == payloads[:-1], cut
        assert items[-1] == frames.Gap(whole, cut)


def test_a_corrupt_frame_in_the_middle_costs_only_itself() -> None:
    data = bytearray(b"".join(frames.encode(f"record {n}".encode()) for n in range(5)))
    second = len(frames.encode(b"record 0"))
    data[second + frames.HEADER_SIZE + 2] ^= 0xFF  # a flipped bit in record 1's payload
    kept = [f.payload for f in frames.scan(bytes(data)) if isinstance(f, frames.Frame)]
    assert kept == [b"record 0", b"record 2", b"record 3", b"record 4"]
    # A MAGIC inside a payload does not fool the reader: the CRC decides.
    tricky = frames.encode(frames.MAGIC + b"\x00\x00\x00\x01") + frames.encode(b"after")
    assert [f.payload for f in frames.scan(b"junk" + tricky) if isinstance(f, frames.Frame)] == [
        frames.MAGIC + b"\x00\x00\x00\x01",
        b"after",
    ]


def test_records_round_trip_exactly() -> None:
    for record in (row(1), (*row(2)[:4], None, *row(2)[5:]), ODD):
        assert records.decode(records.encode(record)) == record
    with pytest.raises(records.BadRecord):
        records.decode(b'{"v": 99, "kind": "delivery"}')
    with pytest.raises(records.BadRecord):
        records.decode(b"not json")


# -- one process ------------------------------------------------------------------------------


async def test_append_seal_read_and_retire(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "journal", max_bytes=1 << 20)
    await asyncio.gather(*(journal.append(row(n, T0 + n)) for n in range(10)), journal.append(ODD))
    stats = journal.stats()
    assert (stats.depth, stats.oldest, stats.files) == (11, T0, 1)
    assert scan_directory(tmp_path / "journal").depth == 11  # on disk, as another process sees
    await journal.seal()
    [segment] = journal.drainable()
    first = journal.read(segment, 4)
    assert first.records == [row(n, T0 + n) for n in range(4)]
    assert first.next_oldest == T0 + 4
    journal.advance(segment, first)
    assert journal.stats().depth == 7
    rest = journal.read(segment, 100)
    assert rest.records[-1] == ODD
    journal.advance(segment, rest)
    await journal.retire(segment)
    assert journal.stats().depth == 0
    assert not list((tmp_path / "journal").glob("*.journal"))
    # The next append starts a new segment.
    await journal.append(row(99))
    assert journal.stats().files == 1
    journal.close()


async def test_over_its_bound_the_journal_refuses_and_keeps_what_it_took(tmp_path: Path) -> None:
    journal = Journal(tmp_path, max_bytes=4096)
    taken = 0
    refused: JournalUnavailable | None = None
    for n in range(100):
        try:
            await journal.append(row(n))
        except JournalUnavailable as exc:
            refused = exc
            break
        taken += 1
    assert refused is not None
    assert refused.reason == "journal_full"
    assert 0 < taken < 100
    assert journal.unwritable() == "journal_full"
    assert scan_directory(tmp_path).depth == taken
    journal.close()


# -- a process that dies ----------------------------------------------------------------------

_WRITER = textwrap.dedent(
    """
    import asyncio, sys, time
    from pathlib import Path
    from store.journal import Journal
    from tests.store.test_journal import row

    async def main():
        journal = Journal(Path(sys.argv[1]))
        for n in range(int(sys.argv[2])):
            await journal.append(row(n))
        print("appended", flush=True)
        time.sleep(600)

    asyncio.run(main())
    """
)


def _writer(directory: Path, count: int) -> "subprocess.Popen[str]":
    child = subprocess.Popen(
        [sys.executable, "-c", _WRITER, str(directory), str(count)],
        cwd=REPO,
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    assert child.stdout is not None
    for line in child.stdout:  # its log lines come first
        if line.strip() == "appended":
            return child
    raise AssertionError(f"the writer exited {child.wait()}")


async def test_a_live_writers_segments_are_left_alone_a_dead_ones_are_adopted(
    tmp_path: Path,
) -> None:
    child = _writer(tmp_path, 5)
    journal = Journal(tmp_path)
    try:
        assert journal.adopt_orphans() == []  # its writer holds the lock
        live = scan_directory(tmp_path)
        assert (live.depth, live.files, live.orphaned) == (5, 1, 0)
        os.kill(child.pid, signal.SIGKILL)
        child.wait(timeout=10)
        assert scan_directory(tmp_path).orphaned == 1
        [segment] = journal.adopt_orphans()
        journal.adopted([segment])
        assert (segment.depth, segment.owned) == (5, False)
        assert journal.adopt_orphans() == []  # now ours: not adopted twice
        batch = journal.read(segment, 100)
        assert batch.records == [row(n) for n in range(5)]
        journal.advance(segment, batch)
        await journal.retire(segment)
        assert scan_directory(tmp_path).files == 0
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        journal.close()


async def test_a_torn_last_record_of_a_dead_writer_is_skipped_and_earlier_ones_kept(
    tmp_path: Path,
) -> None:
    child = _writer(tmp_path, 3)
    os.kill(child.pid, signal.SIGKILL)
    child.wait(timeout=10)
    [path] = tmp_path.glob("*.journal")
    torn = frames.encode(records.encode(row(3)))
    with path.open("ab") as f:  # a crash mid-append: half a frame reached the disk
        f.write(torn[: len(torn) // 2])
    journal = Journal(tmp_path)
    try:
        [segment] = journal.adopt_orphans()
        assert segment.depth == 3
        batch = journal.read(segment, 100)
        assert batch.records == [row(n) for n in range(3)]
        assert batch.skipped == len(torn) // 2
    finally:
        journal.close()


def test_a_stale_journal_stays_readable_by_status_while_its_writer_lives(tmp_path: Path) -> None:
    child = _writer(tmp_path, 2)
    try:
        stats = scan_directory(tmp_path)
        assert stats.oldest == T0
        assert stats.oldest_seconds(T0 + 30) == 30
        # Asking did not take the writer's lock from it.
        assert child.poll() is None
        assert Journal(tmp_path).adopt_orphans() == []
    finally:
        child.kill()
        child.wait()


async def test_a_journal_of_another_database_is_never_adopted(tmp_path: Path) -> None:
    other = Journal(tmp_path, store=store_key("postgresql://u:secret@db-a/idlehook"))
    await other.append(row(1))
    other.close()  # its writer is gone: an orphan, but of another database
    ours = Journal(tmp_path, store=store_key("postgresql://u:other@db-b/idlehook"))
    assert ours.adopt_orphans() == []
    stats = scan_directory(tmp_path, ours.store)
    assert (stats.depth, stats.other_stores) == (0, 1)
    # The password is not part of the name: the same database under a new password matches.
    same = Journal(tmp_path, store=store_key("postgresql://u:rotated@db-a/idlehook"))
    [segment] = same.adopt_orphans()
    same.adopted([segment])
    assert segment.depth == 1
    same.close()
