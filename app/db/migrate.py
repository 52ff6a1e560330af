"""Alembic, driven from code: ``brokerage migrate``, start-up in embedded mode, and the tests."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine


def _project_root() -> Path:
    """Where ``alembic.ini`` and ``migrations/`` live.

    A source checkout has them next to ``app/``; an installed package (the Docker image)
    does not, and runs from the directory that holds them (``WORKDIR /srv``).
    """
    source = Path(__file__).resolve().parents[2]
    if (source / "alembic.ini").is_file():
        return source
    cwd = Path.cwd()
    if (cwd / "alembic.ini").is_file():
        return cwd
    raise RuntimeError(f"alembic.ini not found next to the source ({source}) or in {cwd}")


ROOT = _project_root()


def alembic_config(database_url: str) -> Config:
    config = Config(str(ROOT / "alembic.ini"))
    config.set_main_option("script_location", str(ROOT / "migrations"))
    config.attributes["database_url"] = database_url
    return config


def upgrade(database_url: str, revision: str = "head") -> None:
    """Apply migrations. Blocking (runs its own event loop): call it off the running loop."""
    _ensure_sqlite_directory(database_url)
    command.upgrade(alembic_config(database_url), revision)


def _ensure_sqlite_directory(database_url: str) -> None:
    url = make_url(database_url)
    if url.get_backend_name() == "sqlite" and url.database not in (None, "", ":memory:"):
        Path(url.database).parent.mkdir(parents=True, exist_ok=True)


def head_revision() -> str:
    script = ScriptDirectory.from_config(alembic_config(""))
    head = script.get_current_head()
    if head is None:
        raise RuntimeError("no migrations found")
    return head


async def current_revision(engine: AsyncEngine) -> str | None:
    async with engine.connect() as connection:
        return await connection.run_sync(
            lambda sync_conn: MigrationContext.configure(sync_conn).get_current_revision()
        )
