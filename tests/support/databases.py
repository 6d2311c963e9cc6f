"""Databases for tests: SQLite in tmp_path, PostgreSQL as a fresh database per test.

PostgreSQL is built once per run into a template database with the migrations applied, then
each test gets `CREATE DATABASE ... TEMPLATE`, which is fast and fully isolated.
"""

import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg
import sqlalchemy as sa

from idlehook.settings import env_flag, env_value
from store.engine import make_engine, migrate

DEFAULT_PG = "postgresql+psycopg://postgres@127.0.0.1:5432/test"


def postgres_base_url() -> str:
    return env_value("IDLEHOOK_TEST_POSTGRES_URL") or DEFAULT_PG


def _libpq(url: str) -> str:
    u = sa.engine.make_url(url)
    return u.set(drivername="postgresql").render_as_string(hide_password=False)


def postgres_available() -> str | None:
    """None when reachable, else the reason."""
    try:
        with psycopg.connect(_libpq(postgres_base_url()), connect_timeout=3):
            return None
    except Exception as exc:
        return f"PostgreSQL not reachable at {postgres_base_url()}: {exc}"


def postgres_is_optional() -> bool:
    return env_flag("IDLEHOOK_SKIP_POSTGRES") and not env_flag("IDLEHOOK_REQUIRE_POSTGRES")


class PostgresFactory:
    def __init__(self) -> None:
        self.base = postgres_base_url()
        self.template = f"idlehook_tpl_{uuid.uuid4().hex[:8]}"
        self._admin = _libpq(self.base)
        self._exec(f'CREATE DATABASE "{self.template}"')
        engine = make_engine(self._url_for(self.template), pool_size=1)
        try:
            migrate(engine)
        finally:
            engine.dispose()

    def _url_for(self, name: str) -> str:
        return (
            sa.engine.make_url(self.base).set(database=name).render_as_string(hide_password=False)
        )

    def _exec(self, sql: str) -> None:
        with psycopg.connect(self._admin, autocommit=True) as conn:
            conn.execute(sql)  # type: ignore[arg-type]

    @contextmanager
    def database(self, *, migrated: bool = True) -> Iterator[str]:
        """A fresh database: a copy of the migrated template, or (migrated=False) empty."""
        name = f"idlehook_t_{uuid.uuid4().hex[:12]}"
        template = f' TEMPLATE "{self.template}"' if migrated else ""
        self._exec(f'CREATE DATABASE "{name}"{template}')
        try:
            yield self._url_for(name)
        finally:
            self._exec(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def close(self) -> None:
        self._exec(f'DROP DATABASE IF EXISTS "{self.template}" WITH (FORCE)')
