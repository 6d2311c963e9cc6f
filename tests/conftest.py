"""Shared fixtures: real servers on loopback, real SQLite and PostgreSQL databases."""

from collections.abc import Iterator
from pathlib import Path

import pytest

from store.engine import make_engine, migrate
from tests.support.databases import PostgresFactory, postgres_available, postgres_is_optional


@pytest.fixture(scope="session")
def postgres_factory() -> Iterator[PostgresFactory]:
    reason = postgres_available()
    if reason is not None:
        if postgres_is_optional():
            pytest.skip(reason)
        pytest.fail(reason + " (PostgreSQL tests must run; set IDLEHOOK_SKIP_POSTGRES=1 to skip)")
    factory = PostgresFactory()
    yield factory
    factory.close()


@pytest.fixture
def postgres_url(postgres_factory: PostgresFactory) -> Iterator[str]:
    with postgres_factory.database() as url:
        yield url


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path / 'idlehook.db'}"
    engine = make_engine(url, pool_size=1)
    try:
        migrate(engine)
    finally:
        engine.dispose()
    return url


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest) -> str:
    """A migrated, empty database URL: every store test runs on both engines."""
    name = "sqlite_url" if request.param == "sqlite" else "postgres_url"
    url: str = request.getfixturevalue(name)
    return url
