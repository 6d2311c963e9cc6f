"""make_engine(url): SQLite in WAL mode, or PostgreSQL; migrate(engine): alembic upgrade head."""

import contextlib
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from sqlalchemy.engine import Engine

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
_SQLITE_TIMEOUT = 5.0  # seconds a writer waits for SQLite's lock before failing (a 503)


def normalise_url(url: str) -> str:
    """Accept plain `postgresql://` and `postgres://` URLs; drive them with psycopg 3."""
    if url.startswith("postgres://"):
        url = "postgresql://" + url[len("postgres://") :]
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url[len("postgresql://") :]
    return url


def is_sqlite(engine: Engine) -> bool:
    return engine.dialect.name == "sqlite"


def make_engine(url: str, *, pool_size: int = 10) -> Engine:
    url = normalise_url(url)
    if url.startswith("sqlite"):
        path = sa.engine.make_url(url).database
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        connect_args: dict[str, Any] = {"check_same_thread": False, "timeout": _SQLITE_TIMEOUT}
        if path and path != ":memory:" and not path.startswith("file:"):
            connect_args["factory"] = GatedConnection
        engine = sa.create_engine(
            url, connect_args=connect_args, pool_size=pool_size, max_overflow=pool_size
        )
        sa.event.listen(engine, "connect", _sqlite_pragmas)
        sa.event.listen(engine, "begin", _begin_immediate)
        return engine
    return sa.create_engine(
        url,
        pool_size=pool_size,
        max_overflow=pool_size,
        pool_pre_ping=True,
        connect_args={"connect_timeout": 5},
    )


def sqlite_path(url: str) -> str | None:
    """The file of a SQLite URL; None for any other database."""
    url = normalise_url(url)
    if not url.startswith("sqlite"):
        return None
    return sa.engine.make_url(url).database or ""


def sqlite_connect(path: str) -> sqlite3.Connection:
    """A plain sqlite3 connection set up exactly as the engine sets up its own."""
    conn = sqlite3.connect(path, timeout=_SQLITE_TIMEOUT, check_same_thread=False)
    _sqlite_pragmas(conn, None)
    return conn


# One gate per SQLite file in this process (keyed by its resolved path).
_GATES: dict[str, threading.Lock] = {}
_GATES_LOCK = threading.Lock()


def _gate(path: str) -> threading.Lock:
    key = str(Path(path).resolve())
    with _GATES_LOCK:
        return _GATES.setdefault(key, threading.Lock())


class GatedConnection(sqlite3.Connection):
    """A sqlite3 connection whose transactions queue on one lock per file per process (every
    transaction here is BEGIN IMMEDIATE, reads included: see `_begin_immediate`).

    SQLite has one writer at a time, and a connection that finds the lock taken waits in its
    busy handler, which sleeps in steps of 1, 2, 5 ... up to 100 ms: a thread could sleep 25 ms
    for a lock freed after 0.3. Threads of one process (the worker's, the sweeps', the API's)
    instead queue on this gate, which hands over the instant a transaction ends; only another
    process (the inbox writer, a second worker) still meets the busy handler.

    The gate is taken just before BEGIN IMMEDIATE and given back when the transaction ends by
    commit, rollback or close, whichever thread does it (a plain Lock: the pool may close a
    connection from another thread).
    """

    def __init__(self, database: str, *args: Any, **kwargs: Any) -> None:
        super().__init__(database, *args, **kwargs)
        self._gate = _gate(database)
        self._holding = False

    @property
    def holding(self) -> bool:
        return self._holding

    def take_gate(self, timeout: float) -> bool:
        if self._holding:
            return True
        if not self._gate.acquire(timeout=timeout):
            return False
        self._holding = True
        return True

    def give_gate(self) -> None:
        if self._holding:
            self._holding = False
            self._gate.release()

    def commit(self) -> None:
        try:
            super().commit()
        except BaseException:
            # A COMMIT that fails can leave the transaction open, and SQLAlchemy then returns
            # the connection to its pool without a reset: still holding SQLite's lock and the
            # gate until that very connection is used again. Nothing was committed; end it.
            if self.in_transaction:
                with contextlib.suppress(sqlite3.Error):
                    super().rollback()
            raise
        finally:
            self._give_gate_if_ended()

    def rollback(self) -> None:
        try:
            super().rollback()
        finally:
            self._give_gate_if_ended()

    def _give_gate_if_ended(self) -> None:
        if not self.in_transaction:
            self.give_gate()

    def close(self) -> None:
        try:
            super().close()
        finally:
            self.give_gate()


def _begin_immediate(conn: sa.Connection) -> None:
    """BEGIN IMMEDIATE: pysqlite's own BEGIN defers the write lock, and two writers that both
    read first then deadlock on the upgrade; taking it up front serialises them instead."""
    raw = conn.connection.driver_connection
    if not isinstance(raw, GatedConnection):
        conn.exec_driver_sql("BEGIN IMMEDIATE")
        return
    timeout = _SQLITE_TIMEOUT
    started = time.monotonic()
    already = raw.holding  # a BEGIN inside a transaction: SQLite refuses it, the gate stays
    if not raw.take_gate(timeout):
        # As SQLite's own busy timeout would end: an OperationalError, so a 503 or a retry.
        locked = sqlite3.OperationalError("database is locked (waited for this process)")
        raise sa.exc.OperationalError("BEGIN IMMEDIATE", None, locked)
    waited = time.monotonic() - started
    try:
        if waited < timeout * _DEADLINE_SLACK:
            conn.exec_driver_sql("BEGIN IMMEDIATE")
        else:
            # One deadline for both waits (within the slack): SQLite's busy handler, for a
            # writer in another process, gets what the gate left of it, not a fresh timeout.
            with _busy_timeout(raw, timeout - waited):
                conn.exec_driver_sql("BEGIN IMMEDIATE")
    except BaseException:
        # SQLAlchemy's rollback and the pool's reset would give it back too; not relied on.
        if not already:
            raw.give_gate()
        raise


# A wait at the gate shorter than this share of the timeout leaves SQLite's busy timeout as it
# is: adjusting it costs statements inside the gate, which every waiting thread then pays for.
_DEADLINE_SLACK = 0.1


@contextlib.contextmanager
def _busy_timeout(raw: sqlite3.Connection, seconds: float) -> Iterator[None]:
    """SQLite's busy timeout at most `seconds` for the block, then as it was (on the driver
    connection itself: cheap, and a PRAGMA that cannot take effect only means a longer wait)."""
    usual: int | None = None
    with contextlib.suppress(sqlite3.Error):
        usual = int(raw.execute("PRAGMA busy_timeout").fetchone()[0])
        raw.execute(f"PRAGMA busy_timeout={max(1, min(usual, int(seconds * 1000)))}")
    try:
        yield
    finally:
        if usual is not None:
            with contextlib.suppress(sqlite3.Error):
                raw.execute(f"PRAGMA busy_timeout={usual}")


def _sqlite_pragmas(dbapi_conn: object, _record: object) -> None:
    # Autocommit at the driver level so SQLAlchemy's "begin" event owns transaction start.
    dbapi_conn.isolation_level = None  # type: ignore[attr-defined]
    cur = dbapi_conn.cursor()  # type: ignore[attr-defined]
    cur.execute("PRAGMA journal_mode=WAL")
    # FULL: a commit survives power loss too; group commit pays the fsync once per batch.
    cur.execute("PRAGMA synchronous=FULL")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA busy_timeout=5000")
    cur.close()


def alembic_config(engine: Engine) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.attributes["engine"] = engine
    return cfg


def migrate(engine: Engine, revision: str = "heads") -> None:
    """Bring the schema to `revision` (idempotent; safe to run on every start)."""
    command.upgrade(alembic_config(engine), revision)


def shown_url(url: str) -> str:
    """`url` as it may be printed: its password masked (***)."""
    return sa.engine.make_url(url).render_as_string(hide_password=True)


def schema_revision(engine: Engine) -> str | None:
    """The alembic revision the database's schema is at (None: never migrated)."""
    from alembic.runtime.migration import MigrationContext

    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()
