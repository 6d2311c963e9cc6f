"""A delivery's compact Row and the frames that carry it to the writer process: frames survive
any split, rows and outcomes survive the trip exactly, EOF is not a message, and a row's SQLite
text is what SQLAlchemy would have written."""

import asyncio
import os
import random
import resource
from datetime import UTC, datetime, timedelta, timezone

import pytest
from sqlmodel import Session, select

from store import frames
from store.inbox import Inbox
from store.ingest import IngestResult, NewDelivery, StoreUnavailable, sqlite_time, to_row
from store.models import Delivery, Source
from store.writer_process import Inbound

AT = datetime(2026, 12, 1, 8, 0, 0, 123457, tzinfo=UTC)


def test_a_stream_split_anywhere_decodes_to_the_same_messages() -> None:
    messages = [("ready",), ("batch", 1.5, [("a", None, {"k": "v"})]), ("done", [7, -8, "x"], [])]
    wire = b"".join(frames.encode(m) for m in messages)
    for step in (1, 3, 7, len(wire)):
        decoder = frames.Decoder()
        got: list[object] = []
        for start in range(0, len(wire), step):
            got.extend(decoder.feed(wire[start : start + step]))
        assert got == messages


def test_a_partial_frame_waits_for_the_rest() -> None:
    one = frames.encode(("ready",))
    decoder = frames.Decoder()
    decoder.push(one + one[:5])
    assert decoder.take() == [("ready",)]
    assert decoder.take() == []  # half a frame: nothing yet, and nothing lost
    decoder.push(one[5:])
    assert decoder.take() == [("ready",)]


@pytest.mark.parametrize("high", [False, True])
def test_the_writer_takes_every_message_already_in_its_pipe_at_once(high: bool) -> None:
    read, write = os.pipe()
    if high:  # the receiver's fd numbers pass through as they are; select() refuses >= 1024
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if soft < 2048:
            resource.setrlimit(resource.RLIMIT_NOFILE, (min(4096, hard), hard))
        high_fd = os.dup2(read, 1500)
        os.close(read)
        read = high_fd
    try:
        inbound = Inbound(read)
        for n in range(3):
            os.write(write, frames.encode(("rows", float(n), [])))
        assert [m[1] for m in inbound.wait()] == [0.0, 1.0, 2.0]
        os.write(write, frames.encode(("rows", 3.0, [])))
        assert [m[1] for m in inbound.wait()] == [3.0]
        os.close(write)
        write = -1
        assert inbound.wait() == []  # the receiver closed the pipe: the writer stops
    finally:
        os.close(read)
        if write != -1:
            os.close(write)


INSTANTS = [
    AT,
    AT.astimezone(timezone(timedelta(hours=2))),
    None,
    datetime(2199, 12, 31, 23, 59, 59, 999999, UTC),
    datetime(1900, 1, 1, 0, 0, 0, 1, UTC),
    datetime(1970, 1, 1, tzinfo=UTC),
]


async def test_a_delivery_is_stored_equal_to_the_microsecond(db_url: str) -> None:
    """Through the writer process, on both engines: the row's float seconds, the frame, the
    SQLite text or the PostgreSQL timestamp, and back."""
    sent = [
        NewDelivery(
            f"wevt_{i}",
            "session.status_idled",
            "sesn_1",
            "sesn_1",
            created,
            AT + timedelta(microseconds=i),
            "{}",
            {"a": "b"},
            0,
            Source.RECONCILE,
        )
        for i, created in enumerate(INSTANTS)
    ]
    inbox = Inbox.connect(db_url)
    try:
        await asyncio.gather(*(inbox.ingest(d) for d in sent))
        await inbox.stop()
        with Session(inbox.engine) as session:
            stored = {d.event_id: d for d in session.exec(select(Delivery))}
    finally:
        inbox.close()
    for d in sent:
        got = stored[d.event_id]
        assert (got.event_created_at, got.received_at) == (d.event_created_at, d.received_at)
        assert (got.headers, got.source, got.secret_index) == ({"a": "b"}, "reconcile", 0)


def test_an_instant_the_row_cannot_keep_exactly_is_refused() -> None:
    far = datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC)
    d = NewDelivery("wevt_1", "agent.created", "agent_1", None, far, AT, "{}")
    with pytest.raises(ValueError, match="outside"):
        to_row(d)


def test_a_naive_datetime_is_refused_not_guessed() -> None:
    naive = NewDelivery(
        "wevt_1", "agent.created", "agent_1", None, None, AT.replace(tzinfo=None), "{}"
    )
    with pytest.raises(ValueError, match="naive"):
        to_row(naive)


def test_outcomes_keep_new_duplicate_and_failure_apart() -> None:
    outcomes: list[IngestResult | StoreUnavailable] = [
        IngestResult(True, 7),
        IngestResult(False, 8),
        StoreUnavailable("OperationalError"),
    ]
    back = [frames.outcome_from_wire(w) for w in frames.outcomes_to_wire(outcomes)]
    assert back[:2] == outcomes[:2]
    assert isinstance(back[2], StoreUnavailable)
    assert str(back[2]) == "OperationalError"


def test_the_sqlite_time_text_is_fromtimestamps_to_the_microsecond() -> None:
    rng = random.Random(7)
    samples = [0.0, -1.5, 1764574695.9999996, 1764574695.0000004, 1764574695.5]
    samples += [rng.uniform(-1e9, 8e9) for _ in range(20_000)]
    samples += [round(rng.uniform(1.7e9, 1.8e9), 6) for _ in range(20_000)]
    for seconds in samples:
        expected = datetime.fromtimestamp(seconds, UTC).isoformat(" ", "microseconds")[:26]
        assert sqlite_time(seconds) == expected, seconds
