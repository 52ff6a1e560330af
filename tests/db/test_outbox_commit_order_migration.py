"""Migration 0017 (Postgres): down to 0016 brings back the insert-time lock and ids drawn at
insert; up again gives provisional ids at insert and reader-visible ids at COMMIT."""

from __future__ import annotations

import asyncio
from pathlib import Path

from alembic import command
from sqlalchemy import text

from app.db.migrate import alembic_config, upgrade
from app.db.session import create_engine
from tests.conftest import own_database

_INSERT = text(
    "INSERT INTO order_events (user_id, type, payload, occurred_at) "
    "VALUES ('u', 'order.accepted', '{}', now()) RETURNING id"
)
_TRIGGERS = text(
    "SELECT tgname FROM pg_trigger WHERE tgrelid = 'order_events'::regclass "
    "AND NOT tgisinternal ORDER BY tgname"
)


async def _append(url: str) -> tuple[list[str], int, int]:
    """The triggers on order_events, the id the insert returned, the id committed."""
    engine = create_engine(url)
    try:
        async with engine.begin() as conn:
            triggers = list((await conn.execute(_TRIGGERS)).scalars())
            returned = int((await conn.execute(_INSERT)).scalar_one())
        async with engine.connect() as conn:
            committed = int(
                (await conn.execute(text("SELECT max(id) FROM order_events"))).scalar_one()
            )
        return triggers, returned, committed
    finally:
        await engine.dispose()


async def test_0017_goes_down_and_up(postgres_url: str, tmp_path: Path) -> None:
    async with own_database(postgres_url, tmp_path) as url:
        triggers, returned, committed = await _append(url)
        assert triggers == ["order_events_outbox_publish"]
        assert returned < 0 < committed

        await asyncio.to_thread(command.downgrade, alembic_config(url), "0016")
        triggers, returned, committed = await _append(url)
        assert triggers == ["order_events_outbox_lock", "order_events_outbox_notify"]
        assert returned == committed > 0

        await asyncio.to_thread(upgrade, url)
        triggers, returned, last = await _append(url)
        assert triggers == ["order_events_outbox_publish"]
        assert returned < 0
        assert last > committed
