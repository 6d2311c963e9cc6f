"""The archive's store layer (handlers/builtin/archive_store.py) on `memory://` and `file://`:
whole objects, the marker written last, a folder without a (matching) marker read as not
archived, a crash between the objects and the marker completed by the retry, a later turn never
rolled back; and `[archive] url` checked by `idlehook config check` and carried by the
published message."""

import json
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from handlers.api import PluginConfigError
from handlers.builtin.archive import ArchiveConfig, ArchiveHandler, ArchiveRaced, save
from handlers.builtin.archive_store import (
    MARKER,
    ArchiveStore,
    FsspecStore,
    LocalStore,
    complete,
    open_store,
    read_marker,
)
from handlers.builtin.publish_message import build_message
from handlers.config import ArchiveSettings
from handlers.registry import build
from idlehook import config_check
from idlehook.settings import Settings
from sessions.session_report import Archive
from tests.cli.test_config_check import idlehook, problem_lines, write_config
from tests.handlers.test_publish_message import EVENT, NOW, RESULT
from tests.integrations.schema import validate

SID = "sesn_store_01"


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


class Recording:
    """A store that records the order of its writes and can fail one key (a crash)."""

    def __init__(self, inner: ArchiveStore, fail_on: str | None = None) -> None:
        self.inner = inner
        self.marked = inner.marked
        self.fail_on = fail_on
        self.written: list[str] = []
        self.after_write: dict[str, bytes] = {}  # key written -> another writer's object then

    def address(self, key: str) -> str:
        return self.inner.address(key)

    def write(self, key: str, data: bytes) -> None:
        if self.fail_on is not None and key.endswith(self.fail_on):
            raise OSError("the worker died here")
        self.inner.write(key, data)
        self.written.append(key)
        if key.endswith(MARKER):
            for other, body in self.after_write.items():
                self.inner.write(other, body)  # a concurrent writer's object lands now
            self.after_write = {}

    def read(self, key: str) -> bytes | None:
        return self.inner.read(key)

    def size(self, key: str) -> int | None:
        return self.inner.size(key)

    def keys(self, prefix: str) -> list[str]:
        return self.inner.keys(prefix)


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
    # A's result.json is replaced by B's (another size: its duration moved on) between A's
    # marker and A's check of it; A describes what is there, as B will.
    other = (json.dumps({"turn": 1, "duration_seconds": 12.5}, indent=2) + "\n").encode()
    recording = Recording(store)
    recording.after_write = {f"{SID}/result.json": other}
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
