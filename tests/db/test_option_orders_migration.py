"""Migration 0009 (option orders) on both backends: the option columns of ``orders`` and
their checks appear, and it goes down and up again cleanly."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from alembic import command
from sqlalchemy import inspect

from app.db.migrate import alembic_config, upgrade
from app.db.session import create_engine
from tests.conftest import own_database

OPTION_COLUMNS = {"position_effect", "price_effect", "legs"}


async def _orders_schema(url: str) -> tuple[set[str], set[str]]:
    def read(sync_conn: Any) -> tuple[set[str], set[str]]:
        inspector = inspect(sync_conn)
        columns = {c["name"] for c in inspector.get_columns("orders")}
        checks = {str(c["name"]) for c in inspector.get_check_constraints("orders")}
        return columns, checks

    engine = create_engine(url)
    try:
        async with engine.connect() as conn:
            return await conn.run_sync(read)
    finally:
        await engine.dispose()


async def test_0009_adds_the_option_columns_and_goes_down_and_up(
    db_url: str, tmp_path: Path
) -> None:
    async with own_database(db_url, tmp_path) as url:
        columns, checks = await _orders_schema(url)
        assert columns >= OPTION_COLUMNS
        assert {"ck_orders_position_effect", "ck_orders_price_effect"} <= checks
        await asyncio.to_thread(command.downgrade, alembic_config(url), "0008")
        columns, checks = await _orders_schema(url)
        assert not columns & OPTION_COLUMNS
        assert "ck_orders_price_effect" not in checks
        assert "ck_orders_status" in checks  # the table's other checks survive the batch
        await asyncio.to_thread(upgrade, url)
        columns, _ = await _orders_schema(url)
        assert columns >= OPTION_COLUMNS
