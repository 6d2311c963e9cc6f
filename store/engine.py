"""make_engine(url): SQLite in WAL mode, or PostgreSQL; migrate(engine): alembic upgrade head."""

import sqlite3
from pathlib import Path

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
        engine = sa.create_engine(
            url,
            connect_args={"check_same_thread": False, "timeout": _SQLITE_TIMEOUT},
            pool_size=pool_size,
            max_overflow=pool_size,
        )
        sa.event.listen(engine, "connect", _sqlite_pragmas)
        # pysqlite's own BEGIN handling defers the write lock; BEGIN IMMEDIATE takes it up
        # front so two writers never deadlock on a lock upgrade.
        sa.event.listen(engine, "begin", lambda conn: conn.exec_driver_sql("BEGIN IMMEDIATE"))
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
