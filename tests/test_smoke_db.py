from sqlalchemy import text

from app.db.session import SessionMaker


async def test_database_is_migrated(sessionmaker: SessionMaker) -> None:
    async with sessionmaker() as session:
        count = (await session.execute(text("SELECT count(*) FROM orders"))).scalar_one()
    assert count >= 0
