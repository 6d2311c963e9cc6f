"""The alembic migrations and the SQLModel tables describe the same schema, on both engines."""

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlmodel import SQLModel

import store.models  # noqa: F401
from store.engine import make_engine, migrate


def test_migrations_match_models(db_url: str) -> None:
    engine = make_engine(db_url, pool_size=1)
    try:
        migrate(engine)  # a second upgrade is a no-op
        with engine.connect() as conn:
            ctx = MigrationContext.configure(conn, opts={"compare_type": True})
            assert compare_metadata(ctx, SQLModel.metadata) == []
    finally:
        engine.dispose()
