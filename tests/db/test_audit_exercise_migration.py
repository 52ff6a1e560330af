"""Migration 0013 on both backends: ``audit_entries.action`` takes ``exercise``; the
migration goes down and up cleanly, and the narrower check refuses ``exercise`` again."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from sqlalchemy import inspect, text
from sqlalchemy.exc import IntegrityError

from app.db.migrate import alembic_config, upgrade
from app.db.session import create_engine
from tests.conftest import own_database

_INSERT = text(
    "INSERT INTO audit_entries (chain, seq, occurred_at, user_id, action, order_id, account_id,"
    " connection_id, broker_slug, request_fingerprint, outcome, prev_hash, entry_hash)"
    " VALUES ('user:u', :seq, '2026-12-04 19:00:00+00:00', 'u', :action, 'exr_1', 'acc_1',"
    " 'con_1', 'alpaca', 'f', 'accepted:exercise', 'p', 'h')"
)


async def _checks(url: str) -> set[str]:
    def read(sync_conn: Any) -> set[str]:
        return {
            str(c["sqltext"]) for c in inspect(sync_conn).get_check_constraints("audit_entries")
        }

    engine = create_engine(url)
    try:
        async with engine.connect() as conn:
            return await conn.run_sync(read)
    finally:
        await engine.dispose()


async def _insert(url: str, seq: int, action: str) -> None:
    engine = create_engine(url)
    try:
        async with engine.begin() as conn:
            await conn.execute(_INSERT, {"seq": seq, "action": action})
    finally:
        await engine.dispose()


async def test_0013_lets_the_chain_record_exercise(db_url: str, tmp_path: Path) -> None:
    async with own_database(db_url, tmp_path) as url:
        assert any("exercise" in c for c in await _checks(url))
        await _insert(url, 1, "exercise")
        with pytest.raises(IntegrityError):
            await _insert(url, 2, "bogus")
        engine = create_engine(url)
        async with engine.begin() as conn:
            await conn.execute(text("DELETE FROM audit_entries"))
        await engine.dispose()
        await asyncio.to_thread(command.downgrade, alembic_config(url), "0012")
        assert not any("exercise" in c for c in await _checks(url))
        with pytest.raises(IntegrityError):
            await _insert(url, 3, "exercise")
        await asyncio.to_thread(upgrade, url)
        await _insert(url, 4, "exercise")
