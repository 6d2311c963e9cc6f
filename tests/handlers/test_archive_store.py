"""The archive's store layer (handlers/builtin/archive_store.py) on `memory://` and `file://`:
whole objects, the marker written last, a folder without a (matching) marker read as not
archived, a crash between the objects and the marker completed by the retry, a later turn never
rolled back; two writers at once (an earlier and a later turn, or one turn's two results), in
every order of their store calls switching within 24 calls and at the reviewer's named points,
ending whole at the later turn or unarchived with a failed run whose fresh retry completes it;
a raced handler rereading the session; and `[archive] url` checked by `idlehook config check`
(a password never quoted back) and carried by the published message."""

import json
import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TypeVar

import anthropic
import pytest
import structlog
from pydantic import ValidationError

from handlers.api import HandlerContext, PluginConfigError
from handlers.builtin.archive import (
    ArchiveConfig,
    ArchiveHandler,
    ArchiveRaced,
    save,
    turn_number,
)
from handlers.builtin.archive_store import (
    MARKER,
    ArchiveStore,
    FsspecStore,
    LocalStore,
    Marker,
    complete,
    open_store,
    read_marker,
)
from handlers.builtin.publish_message import build_message
from handlers.config import ArchiveSettings
from handlers.reads import DeliveryReads, read_transcript
from handlers.registry import build
from idlehook import config_check
from idlehook.settings import Settings
from sessions.session_report import Archive
from tests.cli.test_config_check import idlehook, problem_lines, write_config
from tests.handlers.conftest import Sessions
from tests.handlers.test_publish_message import EVENT, NOW, RESULT
from tests.integrations.schema import validate

SID = "sesn_store_01"
T = TypeVar("T")


def events(*types: str) -> list[str]:
    return [json.dumps({"type": t, "id": f"sevt_{i}"}) + "\n" for i, t in enumerate(types)]


TURN1 = events("user.message", "agent.message", "session.status_idle")
TURN2 = events(*["user.message", "agent.message", "session.status_idle"] * 2)  # TURN1 and more
RESULT1 = json.dumps({"turn": 1}, indent=2) + "\n"
RESULT2 = json.dumps({"turn": 2, "final_message": "longer"}, indent=2) + "\n"


@pytest.fixture(params=["memory", "file"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[FsspecStore]:
    if request.param == "memory":
        url = f"memory://archive-{uuid.uuid4().hex}/prefix"
    else:
        url = f"file://{tmp_path}/archive"
    s = FsspecStore(url)
    yield s
    if request.param == "memory":
        s.fs.rm(s.root, recursive=True)


class WritesWatched:
    """A store passed through to `inner`, but for `write`, which a subclass watches."""

    def __init__(self, inner: ArchiveStore) -> None:
        self.inner = inner
        self.marked = inner.marked

    def address(self, key: str) -> str:
        return self.inner.address(key)

    def read(self, key: str) -> bytes | None:
        return self.inner.read(key)

    def size(self, key: str) -> int | None:
        return self.inner.size(key)

    def keys(self, prefix: str) -> list[str]:
        return self.inner.keys(prefix)


class Recording(WritesWatched):
    """A store that records the order of its writes and can fail one key (a crash)."""

    def __init__(self, inner: ArchiveStore, fail_on: str | None = None) -> None:
        super().__init__(inner)
        self.fail_on = fail_on
        self.written: list[str] = []
        self.after_write: dict[str, bytes] = {}  # key written -> another writer's object then

    def write(self, key: str, data: bytes) -> None:
        if self.fail_on is not None and key.endswith(self.fail_on):
            raise OSError("the worker died here")
        self.inner.write(key, data)
        self.written.append(key)
        if key.endswith(MARKER):
            for other, body in self.after_write.items():
                self.inner.write(other, body)  # a concurrent writer's object lands now
            self.after_write = {}


def test_objects_round_trip_whole_and_leave_no_temporary_names(store: FsspecStore) -> None:
    store.write(f"{SID}/events.jsonl", b"one\n")
    store.write(f"{SID}/events.jsonl", b"one\ntwo\n")  # replaced whole
    store.write(f"{SID}/turns/0001-result.json", b"{}\n")
    assert store.read(f"{SID}/events.jsonl") == b"one\ntwo\n"
    assert store.size(f"{SID}/events.jsonl") == 8
    assert store.read(f"{SID}/nothing") is None
    assert store.size(f"{SID}/nothing") is None
    assert store.keys(SID) == [f"{SID}/events.jsonl", f"{SID}/turns/0001-result.json"]
    assert store.keys("sesn_never") == []
    assert store.address(SID).endswith(f"/{SID}")


def test_the_marker_is_written_last_and_lists_every_file(store: FsspecStore) -> None:
    recording = Recording(store)
    assert save(recording, SID, 1, TURN1, RESULT1)
    assert recording.written == [
        f"{SID}/events.jsonl",
        f"{SID}/turns/0001-result.json",
        f"{SID}/result.json",
        f"{SID}/{MARKER}",
    ]
    marker = complete(store, SID)
    assert marker is not None
    assert (marker.turn, marker.events) == (1, 3)
    assert marker.files == {
        "events.jsonl": len("".join(TURN1)),
        "turns/0001-result.json": len(RESULT1),
        "result.json": len(RESULT1),
    }
    archive = Archive.at(store, SID)
    assert (archive.events_jsonl, archive.result_json, archive.complete) == (True, True, True)
    assert archive.turn_results == 1


def test_a_folder_without_its_marker_reads_as_not_archived(store: FsspecStore) -> None:
    store.write(f"{SID}/events.jsonl", "".join(TURN1).encode())
    store.write(f"{SID}/result.json", RESULT1.encode())
    assert complete(store, SID) is None
    archive = Archive.at(store, SID)
    assert (archive.events_jsonl, archive.result_json, archive.complete) == (False, False, False)


def test_a_marker_that_does_not_match_its_files_is_not_trusted(store: FsspecStore) -> None:
    save(store, SID, 1, TURN1, RESULT1)
    store.write(f"{SID}/events.jsonl", b"truncated")
    assert read_marker(store, SID) is not None
    assert complete(store, SID) is None
    assert Archive.at(store, SID).events_jsonl is False


def test_a_crash_before_the_marker_leaves_it_unarchived_and_the_retry_completes_it(
    store: FsspecStore,
) -> None:
    with pytest.raises(OSError, match="died"):
        save(Recording(store, fail_on=MARKER), SID, 1, TURN1, RESULT1)
    assert store.read(f"{SID}/events.jsonl") is not None  # the objects are there...
    assert complete(store, SID) is None  # ...but the folder is not archived
    assert save(store, SID, 1, TURN1, RESULT1)  # the run's retry
    marker = complete(store, SID)
    assert marker is not None
    assert marker.turn == 1
    assert store.read(f"{SID}/events.jsonl") == "".join(TURN1).encode()


def test_two_writers_of_one_turn_converge_on_a_matching_marker(store: FsspecStore) -> None:
    # A's turn file and result.json are replaced by B's (another size: its duration moved on)
    # between A's marker and A's check of it; A describes what is there, as B will.
    other = (json.dumps({"turn": 1, "duration_seconds": 12.5}, indent=2) + "\n").encode()
    recording = Recording(store)
    recording.after_write = {f"{SID}/turns/0001-result.json": other, f"{SID}/result.json": other}
    save(recording, SID, 1, TURN1, RESULT1)
    marker = complete(store, SID)
    assert marker is not None
    assert marker.files["result.json"] == len(other)
    assert save(store, SID, 1, TURN1, other.decode())  # B finishes: its folder, whole
    final = complete(store, SID)
    assert final is not None
    assert final.files == {
        "events.jsonl": len("".join(TURN1)),
        "turns/0001-result.json": len(other),
        "result.json": len(other),
    }


def test_a_writer_raced_by_an_unfinished_one_retries_and_the_retry_completes_it(
    store: FsspecStore,
) -> None:
    # Turn 2's writer has put its transcript, not yet its results, when turn 1's marker lands:
    # the folder cannot be described whole, so the run fails (and is retried) unarchived.
    recording = Recording(store)
    recording.after_write = {f"{SID}/events.jsonl": "".join(TURN2).encode()}
    with pytest.raises(ArchiveRaced):
        save(recording, SID, 1, TURN1, RESULT1)
    assert complete(store, SID) is None
    assert save(store, SID, 2, TURN2, RESULT2)  # turn 2's writer finishes
    marker = complete(store, SID)
    assert marker is not None
    assert marker.turn == 2


def test_a_late_run_of_an_earlier_turn_never_rolls_the_folder_back(store: FsspecStore) -> None:
    assert save(store, SID, 2, TURN2, RESULT2)
    assert not save(store, SID, 1, TURN1, RESULT1)  # a retry of turn 1, after turn 2
    marker = complete(store, SID)
    assert marker is not None
    assert marker.turn == 2
    assert store.read(f"{SID}/events.jsonl") == "".join(TURN2).encode()
    assert store.read(f"{SID}/result.json") == RESULT2.encode()
    # Each turn keeps its own result.
    assert store.read(f"{SID}/turns/0001-result.json") == RESULT1.encode()
    assert store.read(f"{SID}/turns/0002-result.json") == RESULT2.encode()
    assert Archive.at(store, SID).turn_results == 2


def test_the_local_directory_is_written_as_before(tmp_path: Path) -> None:
    local = open_store(tmp_path)
    assert isinstance(local, LocalStore)
    assert save(local, SID, 1, TURN1, RESULT1)
    folder = tmp_path / SID
    assert sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()) == [
        "events.jsonl",
        "result.json",
        "turns/0001-result.json",
    ]  # no marker, no temporary names
    assert (folder / "events.jsonl").read_text() == "".join(TURN1)
    archive = Archive.at(tmp_path, SID)
    assert (archive.path, archive.events_jsonl, archive.complete) == (str(folder), True, None)


def test_the_archive_table_takes_a_url_but_no_password() -> None:
    handler = build(ArchiveHandler, "archive", {"url": "memory://b/p", "storage_options": {"k": 1}})
    assert isinstance(handler, ArchiveHandler)
    assert isinstance(handler.store(Path("unused")), FsspecStore)
    with pytest.raises(PluginConfigError) as refused:
        build(ArchiveHandler, "archive", {"url": "s3://AKIA:hunter2@bucket/p"})
    assert "hunter2" not in str(refused.value)
    assert "hunter2" not in repr(ArchiveConfig(storage_options={"secret": "hunter2"}))


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("nosuch://bucket/p", "[archive] url: nosuch:// is not a scheme fsspec knows"),
        ("gs://bucket/p", "[archive] url: gs:// needs gcsfs: pip install gcsfs"),
    ],
)
def test_config_check_refuses_an_archive_url_it_cannot_write(url: str, expected: str) -> None:
    settings = Settings(archive=ArchiveSettings(url=url))
    assert expected in config_check.check(settings).errors
    ok = Settings(archive=ArchiveSettings(url="s3://bucket/prefix"))
    assert config_check.check(ok).ok


def test_idlehook_config_check_exits_2_in_one_line(tmp_path: Path, sqlite_url: str) -> None:
    config = write_config(tmp_path, sqlite_url, '[archive]\nurl = "nosuch://bucket/prefix"\n')
    done = idlehook(config, "config", "check")
    assert done.returncode == 2, done.stderr
    assert problem_lines(done.stderr) == [
        "idlehook: configuration error: [archive] url: nosuch:// is not a scheme fsspec knows"
    ]


def test_the_published_message_points_at_the_url() -> None:
    message = build_message(
        RESULT, EVENT, handler="publish_redis", archive_dir="s3://bucket/prefix/sesn_01", now=NOW
    )
    validate(message)
    assert message["archive"] == {
        "directory": "s3://bucket/prefix/sesn_01",
        "transcript": "s3://bucket/prefix/sesn_01/events.jsonl",
        "result": "s3://bucket/prefix/sesn_01/result.json",
    }


# -- two writers at once ----------------------------------------------------------------------
# Two writers of one folder, their store calls interleaved one by one in a chosen order. After
# every order the folder must be (i) complete at the higher turn, its transcript, result.json
# and that turn's file belonging together, or (ii) not complete with a run that failed
# (ArchiveRaced), whose retry on a fresh read then completes it. Never a success over a folder
# left incomplete or rolled back.

RESULT1B = json.dumps({"turn": 1, "duration_seconds": 12.5}, indent=2) + "\n"  # another size


@dataclass(frozen=True)
class Writer:
    name: str
    turn: int
    events: list[str]
    result: str


R1 = Writer("R", 1, TURN1, RESULT1)  # the reaper's archiver (or a run that lost its lease)
L2 = Writer("L", 2, TURN2, RESULT2)  # the worker, one turn later
A1 = Writer("A", 1, TURN1, RESULT1)
B1 = Writer("B", 1, TURN1, RESULT1B)  # same turn, its result read a moment later


class Scheduler:
    """Lets one writer's store call through at a time, in the order `order` names (then the
    other's, once one is done): each call waits for its writer's turn."""

    def __init__(self, order: list[str], names: tuple[str, str]) -> None:
        self.cond = threading.Condition()
        self.order = iter(order)
        self.live = set(names)
        self.current = self._pick()

    def _pick(self) -> str | None:
        if len(self.live) < 2:
            return next(iter(self.live), None)
        return next((n for n in self.order if n in self.live), min(self.live))

    def call(self, name: str, fn: Callable[[], T]) -> T:
        with self.cond:
            # A guard against a hung test, never a timed assert: a turn comes within microseconds.
            assert self.cond.wait_for(lambda: self.current == name, timeout=30)
            try:
                return fn()
            finally:
                self.current = self._pick()
                self.cond.notify_all()

    def done(self, name: str) -> None:
        with self.cond:
            self.live.discard(name)
            self.current = self._pick()
            self.cond.notify_all()


class Stepped:
    """One writer's view of the store: each call waits for the scheduler."""

    def __init__(self, inner: ArchiveStore, name: str, scheduler: Scheduler) -> None:
        self.inner, self.name, self.scheduler = inner, name, scheduler
        self.marked = inner.marked

    def address(self, key: str) -> str:
        return self.inner.address(key)

    def write(self, key: str, data: bytes) -> None:
        self.scheduler.call(self.name, lambda: self.inner.write(key, data))

    def read(self, key: str) -> bytes | None:
        return self.scheduler.call(self.name, lambda: self.inner.read(key))

    def size(self, key: str) -> int | None:
        return self.scheduler.call(self.name, lambda: self.inner.size(key))

    def keys(self, prefix: str) -> list[str]:
        return self.scheduler.call(self.name, lambda: self.inner.keys(prefix))


Outcome = bool | ArchiveRaced


def race(
    inner: ArchiveStore, first: Writer, second: Writer, order: list[str]
) -> dict[str, Outcome]:
    """Both writers' saves at once, their store calls in `order`; what each returned or raised."""
    scheduler = Scheduler(order, (first.name, second.name))
    outcomes: dict[str, Outcome] = {}

    def run(w: Writer) -> None:
        try:
            outcomes[w.name] = save(
                Stepped(inner, w.name, scheduler), SID, w.turn, w.events, w.result
            )
        except ArchiveRaced as raced:
            outcomes[w.name] = raced
        finally:
            scheduler.done(w.name)

    threads = [threading.Thread(target=run, args=(w,)) for w in (first, second)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return outcomes


def together(store: ArchiveStore, writers: tuple[Writer, ...]) -> Marker | None:
    """The folder's marker when complete at the highest turn with its transcript, result.json
    and that turn's file all one writer's turn (the same turn's writers may mix); else None."""
    marker = complete(store, SID)
    top = max(w.turn for w in writers)
    if marker is None or marker.turn != top:
        return None
    transcript = store.read(f"{SID}/events.jsonl")
    result = store.read(f"{SID}/result.json")
    own = store.read(f"{SID}/turns/{top:04d}-result.json")
    at_top = [w for w in writers if w.turn == top]
    if transcript not in {"".join(w.events).encode() for w in at_top}:
        return None
    if result != own or result not in {w.result.encode() for w in at_top}:
        return None
    return marker


def assert_converges(store: ArchiveStore, writers: tuple[Writer, Writer], order: list[str]) -> None:
    outcomes = race(store, *writers, order)
    raced = [w for w in writers if isinstance(outcomes[w.name], ArchiveRaced)]
    if together(store, writers) is None:
        # (ii): not complete at all (never complete at a lower turn), and a run failed...
        assert complete(store, SID) is None, (order, outcomes)
        assert raced, (order, outcomes)
        # ...whose retry, on a fresh read (the session is at the higher turn), completes it.
        for w in raced:
            retry(store, w, writers)
        assert together(store, writers) is not None, (order, outcomes)


def retry(store: ArchiveStore, failed: Writer, writers: tuple[Writer, ...]) -> bool:
    """The failed writer's retry on a fresh read: the session is at the highest turn by now."""
    top = max(writers, key=lambda w: w.turn)
    fresh = failed if failed.turn == top.turn else top
    return save(store, SID, fresh.turn, fresh.events, fresh.result)


def orders(names: tuple[str, str], calls: int) -> Iterator[list[str]]:
    """Every order with up to three switches between two writers (the second's first call at
    i, back to the first at j, to the second at k), calls counted up to `calls`."""
    a, b = names
    for i in range(calls + 1):
        for j in range(i, calls + 1):
            for k in range(j, calls + 1, 3):
                yield [a] * i + [b] * (j - i) + [a] * (k - j) + [b] * calls


@pytest.mark.parametrize(
    "writers",
    [(R1, L2), (A1, B1)],
    ids=["turn1-and-turn2", "same-turn-two-sizes"],
)
def test_two_writers_end_complete_at_the_higher_turn_or_failed_and_retried(
    writers: tuple[Writer, Writer],
) -> None:
    # A save alone makes 12 store calls; a raced one up to ~30. Every order switching within
    # the first 24 (1089 orders), either writer first.
    tried = 0
    for order in orders((writers[0].name, writers[1].name), 24):
        tried += 1
        inner = FsspecStore(f"memory://race-{uuid.uuid4().hex}/p")
        try:
            assert_converges(inner, writers, order)
        finally:
            inner.fs.rm(inner.root, recursive=True)
    assert tried == 1089


class Hooked(WritesWatched):
    """A store that runs `then` (the other writer's steps) just before or after the `nth` write
    of a key ending in `suffix`."""

    def __init__(self, inner: ArchiveStore) -> None:
        super().__init__(inner)
        self.hooks: list[tuple[str, str, int, Callable[[], object]]] = []
        self.writes: dict[str, int] = {}

    def at(self, when: str, suffix: str, then: Callable[[], object], nth: int = 1) -> "Hooked":
        self.hooks.append((when, suffix, nth, then))
        return self

    def _fire(self, when: str, key: str) -> None:
        for hook in list(self.hooks):
            hook_when, suffix, nth, then = hook
            if hook_when == when and key.endswith(suffix) and self.writes.get(suffix) == nth:
                self.hooks.remove(hook)
                then()

    def write(self, key: str, data: bytes) -> None:
        for suffix in {h[1] for h in self.hooks if key.endswith(h[1])}:
            self.writes[suffix] = self.writes.get(suffix, 0) + 1
        self._fire("before", key)
        self.inner.write(key, data)
        self._fire("after", key)


def put(store: ArchiveStore, w: Writer) -> bool:
    return save(store, SID, w.turn, w.events, w.result)


def test_high1_a_late_earlier_turn_fails_and_its_fresh_retry_completes_the_later_turn(
    store: FsspecStore,
) -> None:
    # R (turn 1) read the marker (none), then L (turn 2) writes its whole folder and marker,
    # then R writes its objects over L's: R must not succeed, and must not mark turn 1.
    done: list[bool] = []
    hooked = Hooked(store).at("before", "events.jsonl", lambda: done.append(put(store, L2)))
    with pytest.raises(ArchiveRaced):
        put(hooked, R1)
    assert done == [True]  # L saw its folder whole, before R's objects landed
    assert complete(store, SID) is None  # (ii): not complete, and R failed
    with pytest.raises(ArchiveRaced):
        put(store, R1)  # a retry on the same, stale read fails visibly again
    assert complete(store, SID) is None
    assert put(store, L2) is True  # the retry on a fresh read (the session is at turn 2)
    assert together(store, (R1, L2)) is not None


def test_high2a_an_earlier_turns_result_never_sits_under_a_later_turns_marker(
    store: FsspecStore,
) -> None:
    # R (turn 1) writes its transcript; L (turn 2) writes its whole folder; R writes turns/1,
    # result.json and comes to its marker: the folder is turn 2's, result.json turn 2's result.
    done: list[bool] = []
    hooked = Hooked(store).at("after", "events.jsonl", lambda: done.append(put(store, L2)))
    assert put(hooked, R1) is False  # kept the later turn
    assert done == [True]
    marker = together(store, (R1, L2))
    assert marker is not None  # (i)
    assert store.read(f"{SID}/result.json") == RESULT2.encode()
    assert store.read(f"{SID}/turns/0001-result.json") == RESULT1.encode()


def test_high2b_same_turn_writers_of_different_sizes_end_complete(store: FsspecStore) -> None:
    # A has written its objects when B writes its transcript and turn file (mid-write); A's
    # marker mismatches and A describes the folder; B finishes and verifies its marker; then
    # A's marker lands over B's. A re-checks: the folder ends complete, and both say so.
    def b_starts() -> None:
        store.write(f"{SID}/events.jsonl", "".join(B1.events).encode())
        store.write(f"{SID}/turns/0001-result.json", B1.result.encode())

    done: list[bool] = []
    hooked = (
        Hooked(store)
        .at("after", "result.json", b_starts)
        .at("before", MARKER, lambda: done.append(put(store, B1)), nth=2)
    )
    assert put(hooked, A1) is True
    assert done == [True]
    marker = together(store, (A1, B1))
    assert marker is not None  # (i), at one result: B's, in result.json and turns/0001 both
    assert store.read(f"{SID}/result.json") == RESULT1B.encode()
    assert marker.files["result.json"] == len(RESULT1B)


async def test_a_raced_run_reads_the_session_afresh_and_completes_the_later_turn(
    client: anthropic.AsyncAnthropic, sessions: Sessions
) -> None:
    # The delivery read the session at turn 1; the session took a follow-up and rested again,
    # and the folder was left as HIGH 1 leaves it: turn 2's marker over turn 1's objects. The
    # run on the shared (stale) read is raced; it rereads (for itself only) and completes turn 2.
    session_id = sessions.finished()
    stale = DeliveryReads()
    stale.events = await read_transcript(client, session_id)
    sessions.api.beta.sessions.events.send(
        session_id,
        events=[{"type": "user.message", "content": [{"type": "text", "text": "more"}]}],
    )
    sessions.wait_status(session_id, "running")
    sessions.wait_status(session_id, "idle")
    fresh = await read_transcript(client, session_id)
    assert turn_number(fresh) == turn_number(stale.events) + 1

    handler = ArchiveHandler(ArchiveConfig(url=f"memory://raced-{uuid.uuid4().hex}/p"))
    folder = handler.store(Path("unused"))

    def context(reads: DeliveryReads, attempt: int) -> HandlerContext:
        return HandlerContext(
            event=replace(EVENT, session_id=session_id, resource_id=session_id),
            client=client,
            log=structlog.get_logger("test"),
            now=lambda: datetime.now(UTC),
            handler="archive",
            attempt=attempt,
            reads=reads,
        )

    await handler.handle(context(DeliveryReads(), 1))  # turn 2's writer: complete
    assert (marker := complete(folder, session_id)) is not None
    assert marker.turn == turn_number(fresh)
    stale_lines = [
        json.dumps(e.to_dict(mode="json"), ensure_ascii=False) + "\n" for e in stale.events
    ]
    folder.write(f"{session_id}/events.jsonl", "".join(stale_lines).encode())  # the late writer's
    folder.write(f"{session_id}/result.json", b"{}\n")
    assert complete(folder, session_id) is None

    for attempt in (1, 2):  # raced on the shared read, then reread; or a retry: reread first
        await handler.handle(context(stale, attempt))
        marker = complete(folder, session_id)
        assert marker is not None
        assert marker.turn == turn_number(fresh)
        assert marker.events == len(fresh)
        assert folder.read(f"{session_id}/result.json") == folder.read(
            f"{session_id}/turns/{marker.turn:04d}-result.json"
        )
        assert stale.events is not None
        assert len(stale.events) < len(fresh)  # the delivery's other runs keep their read
        folder.write(f"{session_id}/events.jsonl", "".join(stale_lines).encode())


def test_a_url_with_a_password_is_never_quoted_back() -> None:
    # wiring.archiver validates the table directly (no registry): pydantic's own error must not
    # carry the URL either.
    with pytest.raises(ValidationError) as refused:
        ArchiveConfig(url="s3://AKIA:hunter2@bucket/p")
    assert "hunter2" not in str(refused.value)
    assert "hunter2" not in repr(refused.value)
