from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Connection, text
from sqlalchemy.ext.asyncio import AsyncEngine

from app.db import models  # noqa: F401  (registers the tables)
from app.db.base import Base
from app.db.session import SessionMaker


async def test_database_is_migrated(sessionmaker: SessionMaker) -> None:
    async with sessionmaker() as session:
        count = (await session.execute(text("SELECT count(*) FROM orders"))).scalar_one()
    assert count >= 0


async def test_the_migrated_schema_matches_the_models(engine: AsyncEngine) -> None:
    """Every migration (0002 oauth_states included) produces exactly what the models declare."""

    def diff(connection: Connection) -> list[object]:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        return list(compare_metadata(context, Base.metadata))

    async with engine.connect() as connection:
        assert await connection.run_sync(diff) == []
