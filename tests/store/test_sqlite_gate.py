"""The SQLite write gate: threads of one process queue on it, never in SQLite's busy handler.

Each test's engine has SQLite's busy timeout at 0, so any contention that reached SQLite would
fail at once with "database is locked": the gate is what keeps these writers apart.
"""

import contextlib
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

import store.engine
from store.engine import GatedConnection, make_engine

# An exception in a helper thread is a failure here, not a warning.
pytestmark = pytest.mark.filterwarnings("error::pytest.PytestUnhandledThreadExceptionWarning")


def _no_busy_wait(dbapi_conn: sqlite3.Connection, _: object) -> None:
    dbapi_conn.execute("PRAGMA busy_timeout=0")


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "gate.db"


@pytest.fixture
def engine(db_path: Path) -> Iterator[Engine]:
    engine = make_engine(f"sqlite:///{db_path}", pool_size=4)
    sa.event.listen(engine, "connect", _no_busy_wait)
    with engine.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE n (v INTEGER NOT NULL)")
    yield engine
    engine.dispose()


@contextlib.contextmanager
def _held(engine: Engine) -> Iterator[threading.Event]:
    """A transaction held open by another thread until the block ends or the event is set."""
    inside, release = threading.Event(), threading.Event()

    def holder() -> None:
        with engine.begin():
            inside.set()
            release.wait(10)

    t = threading.Thread(target=holder)
    t.start()
    try:
        assert inside.wait(10)
        yield release
    finally:
        release.set()
        t.join()


def _count(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(conn.exec_driver_sql("SELECT count(*) FROM n").scalar_one())


def test_file_engines_hand_out_gated_connections(engine: Engine) -> None:
    with engine.connect() as conn:
        assert isinstance(conn.connection.driver_connection, GatedConnection)


def test_threads_writing_at_once_never_meet_sqlites_lock(engine: Engine) -> None:
    errors: list[BaseException] = []
    start = threading.Barrier(8)

    def writer() -> None:
        start.wait()
        for _ in range(40):
            try:
                with engine.begin() as conn:
                    # Read, then write: the pattern that deadlocks on a lock upgrade.
                    total = conn.exec_driver_sql("SELECT count(*) FROM n").scalar_one()
                    conn.exec_driver_sql("INSERT INTO n (v) VALUES (?)", (total,))
            except BaseException as exc:  # collected, and asserted below
                errors.append(exc)

    threads = [threading.Thread(target=writer) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert _count(engine) == 320
    with engine.connect() as conn:
        # Serialised: every transaction saw all the ones before it.
        values = [v for (v,) in conn.exec_driver_sql("SELECT v FROM n ORDER BY v")]
    assert values == list(range(320))


def test_a_writer_waits_for_the_one_holding_the_gate(engine: Engine) -> None:
    inside, release, second_in = threading.Event(), threading.Event(), threading.Event()

    def first() -> None:
        with engine.begin() as conn:
            conn.exec_driver_sql("INSERT INTO n (v) VALUES (1)")
            inside.set()
            release.wait(10)

    def second() -> None:
        with engine.begin() as conn:
            second_in.set()
            conn.exec_driver_sql("INSERT INTO n (v) VALUES (2)")

    a = threading.Thread(target=first)
    a.start()
    assert inside.wait(10)
    b = threading.Thread(target=second)
    b.start()
    assert not second_in.wait(0.3)  # queued on the gate, not failed, not inside
    release.set()
    a.join()
    b.join()
    assert second_in.is_set()
    assert _count(engine) == 2


def test_a_wait_past_the_timeout_is_an_operational_error_and_leaks_nothing(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(store.engine, "_SQLITE_TIMEOUT", 0.2)
    with _held(engine), pytest.raises(sa.exc.OperationalError, match="locked"), engine.begin():
        pass
    with engine.begin() as conn:  # the timed-out attempt took nothing with it
        conn.exec_driver_sql("INSERT INTO n (v) VALUES (1)")
    assert _count(engine) == 1


@pytest.mark.parametrize("ending", ["commit", "rollback", "exception", "invalidate"])
def test_every_way_a_transaction_ends_gives_the_gate_back(
    engine: Engine, monkeypatch: pytest.MonkeyPatch, ending: str
) -> None:
    monkeypatch.setattr(store.engine, "_SQLITE_TIMEOUT", 0.5)
    conn = engine.connect()
    tx = conn.begin()
    conn.exec_driver_sql("INSERT INTO n (v) VALUES (1)")
    if ending == "commit":
        tx.commit()
    elif ending == "rollback":
        tx.rollback()
    elif ending == "exception":
        with pytest.raises(sa.exc.IntegrityError):
            conn.exec_driver_sql("INSERT INTO n (v) VALUES (NULL)")
        tx.rollback()
    else:
        conn.invalidate()  # the pool closes the driver connection mid-transaction
    conn.close()
    # Another thread (the gate is a plain lock: not re-entrant by thread) gets in at once.
    done: list[int] = []
    t = threading.Thread(target=lambda: done.append(_insert_and_count(engine)))
    t.start()
    t.join()
    assert done == [2 if ending == "commit" else 1]


def _insert_and_count(engine: Engine) -> int:
    with engine.begin() as conn:
        conn.exec_driver_sql("INSERT INTO n (v) VALUES (2)")
    return _count(engine)


def test_a_begin_refused_by_another_process_gives_the_gate_back(
    engine: Engine, db_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(store.engine, "_SQLITE_TIMEOUT", 0.5)
    other = sqlite3.connect(db_path, isolation_level=None)  # not gated: as another process
    other.execute("BEGIN EXCLUSIVE")
    try:
        with pytest.raises(sa.exc.OperationalError), engine.begin():
            pass
    finally:
        other.execute("ROLLBACK")
        other.close()
    with engine.begin() as conn:
        conn.exec_driver_sql("INSERT INTO n (v) VALUES (1)")
    assert _count(engine) == 1


def test_two_files_do_not_share_a_gate(tmp_path: Path) -> None:
    engines = [make_engine(f"sqlite:///{tmp_path / name}", pool_size=1) for name in "ab"]
    try:
        # On a shared gate the second would wait, then fail.
        with engines[0].begin(), engines[1].begin() as conn:
            conn.exec_driver_sql("CREATE TABLE t (v INTEGER)")
    finally:
        for e in engines:
            e.dispose()


def test_a_failed_commit_ends_its_transaction_and_gives_the_gate_back(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(store.engine, "_SQLITE_TIMEOUT", 0.5)
    with engine.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE parent (id INTEGER PRIMARY KEY)")
        conn.exec_driver_sql(
            "CREATE TABLE child (parent_id INTEGER REFERENCES parent (id)"
            " DEFERRABLE INITIALLY DEFERRED)"
        )
    conn = engine.connect()
    tx = conn.begin()
    conn.exec_driver_sql("INSERT INTO child (parent_id) VALUES (99)")  # checked at COMMIT
    with pytest.raises(sa.exc.IntegrityError):
        tx.commit()
    # SQLAlchemy returns a connection whose COMMIT failed to the pool without a reset.
    conn.close()
    done: list[int] = []
    t = threading.Thread(target=lambda: done.append(_insert_and_count(engine)))
    t.start()
    t.join()
    assert done == [1]
    with engine.connect() as check:
        assert check.exec_driver_sql("SELECT count(*) FROM child").scalar_one() == 0


def _waiting_engine(db_path: Path, busy_ms: int) -> Engine:
    engine = make_engine(f"sqlite:///{db_path}", pool_size=2)
    sa.event.listen(engine, "connect", lambda c, _: c.execute(f"PRAGMA busy_timeout={busy_ms}"))
    return engine


def test_the_gate_and_sqlites_busy_handler_share_one_deadline(
    engine: Engine, db_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(store.engine, "_SQLITE_TIMEOUT", 1.0)
    waiting = _waiting_engine(db_path, 1000)
    with waiting.connect():
        pass  # its connection made (in WAL mode) before the lock below is taken
    other = sqlite3.connect(db_path, isolation_level=None)  # another process, for SQLite
    other.execute("BEGIN IMMEDIATE")
    gate = store.engine._gate(str(db_path))
    gate.acquire()  # as a thread of this process in a transaction would hold it
    threading.Timer(0.6, gate.release).start()
    started = time.monotonic()
    try:
        with pytest.raises(sa.exc.OperationalError), waiting.begin():
            pass
        elapsed = time.monotonic() - started
    finally:
        other.execute("ROLLBACK")
        other.close()
        waiting.dispose()
    # 0.6 s at the gate leaves 0.4 s for SQLite; a fresh 1 s timeout would end at about 1.6 s.
    assert 0.9 < elapsed < 1.3


def test_a_wait_at_the_gate_leaves_the_busy_timeout_as_it_was(
    db_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(store.engine, "_SQLITE_TIMEOUT", 1.0)  # leaves less than 1234 ms
    waiting = _waiting_engine(db_path, 1234)
    try:
        with _held(waiting) as release:
            threading.Timer(0.2, release.set).start()
            with waiting.begin() as conn:  # waits 0.2 s of 1 s at the gate: past the slack
                assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar_one() == 1234
    finally:
        waiting.dispose()


def test_a_begin_refused_inside_a_transaction_keeps_the_gate_for_that_transaction(
    engine: Engine, db_path: Path
) -> None:
    gate = store.engine._gate(str(db_path))
    with engine.connect() as conn:
        tx = conn.begin()
        conn.exec_driver_sql("INSERT INTO n (v) VALUES (1)")
        with pytest.raises(sa.exc.OperationalError, match="within a transaction"):
            store.engine._begin_immediate(conn)  # as a second BEGIN on this connection would
        assert gate.locked()  # still this transaction's: SQLite's lock is still held too
        tx.rollback()
        assert not gate.locked()
