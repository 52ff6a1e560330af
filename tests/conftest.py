"""Shared fixtures: a migrated Postgres database and a migrated SQLite file per test module.

Tests isolate themselves by creating their own users (``new_user()``), so no table is
truncated between tests and every test sees the other tests' rows of its module, as
production would. Each module gets databases of its own, copied from ones migrated once per
run (a Postgres template database, a SQLite file): with one database for the whole run, rows
piled up, and every app start-up's reconciliation pass (``Reconciler.run_once``) walked
hundreds of orders left behind by earlier modules at brokers (fakes) long gone, which made
the last tests of a run several times slower than the same tests alone.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import pytest_asyncio
from sqlalchemy.ext.asyncio import AsyncEngine

from app.db.migrate import upgrade
from app.db.session import SessionMaker, create_engine, create_sessionmaker
from tests.postgres import fresh_database, postgres_server

if TYPE_CHECKING:
    from tests.harness import Harness


def new_user(prefix: str = "user") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


@contextlib.asynccontextmanager
async def own_database(shared_url: str, directory: Path) -> AsyncIterator[str]:
    """A migrated database of the caller's own, on the backend of ``shared_url``.

    For tests that break things on purpose (tampering with the audit chain, fault
    triggers): the shared databases of the run must stay intact for every other test.
    """
    if shared_url.startswith("sqlite"):
        url = f"sqlite+aiosqlite:///{directory / f'own-{uuid.uuid4().hex[:8]}.db'}"
        await asyncio.to_thread(upgrade, url)
        yield url
        return
    async with fresh_database(shared_url) as url:
        await asyncio.to_thread(upgrade, url)
        yield url


@pytest_asyncio.fixture(scope="session")
async def postgres_admin_url() -> AsyncIterator[str]:
    """An admin database on the run's Postgres server (found or started once)."""
    async with postgres_server() as admin_url:
        yield admin_url


@pytest_asyncio.fixture(scope="session")
async def postgres_template(postgres_admin_url: str) -> AsyncIterator[str]:
    """The name of a database migrated once per run, which module databases are copied
    from (``CREATE DATABASE ... TEMPLATE``); nothing connects to it after the migration."""
    async with fresh_database(postgres_admin_url) as url:
        await asyncio.to_thread(upgrade, url)
        yield url.rpartition("/")[2]


@pytest_asyncio.fixture(scope="module")
async def postgres_url(postgres_admin_url: str, postgres_template: str) -> AsyncIterator[str]:
    async with fresh_database(postgres_admin_url, template=postgres_template) as url:
        yield url


@pytest_asyncio.fixture(scope="session")
async def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A SQLite file migrated once per run; module databases are copies of it."""
    path: Path = tmp_path_factory.mktemp("sqlite-template") / "brokerage.db"
    await asyncio.to_thread(upgrade, f"sqlite+aiosqlite:///{path}")
    return path


@pytest.fixture(scope="module")
def sqlite_url(sqlite_template: Path, tmp_path_factory: pytest.TempPathFactory) -> str:
    path: Path = tmp_path_factory.mktemp("sqlite") / "brokerage.db"
    shutil.copyfile(sqlite_template, path)
    return f"sqlite+aiosqlite:///{path}"


@pytest.fixture(params=["postgres", "sqlite"])
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest_asyncio.fixture(scope="module")
async def postgres_engine(postgres_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(postgres_url)
    yield engine
    await engine.dispose()


@pytest_asyncio.fixture(scope="module")
async def sqlite_engine(sqlite_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(sqlite_url)
    yield engine
    await engine.dispose()


@pytest.fixture
def db_url(backend: str, request: pytest.FixtureRequest) -> str:
    """The database URL of the current backend (the test runs once per backend)."""
    return str(request.getfixturevalue(f"{backend}_url"))


@pytest.fixture
def engine(backend: str, request: pytest.FixtureRequest) -> AsyncEngine:
    """A shared engine on the current backend (the test runs once per backend)."""
    value: AsyncEngine = request.getfixturevalue(f"{backend}_engine")
    return value


@pytest.fixture
def sessionmaker(engine: AsyncEngine) -> SessionMaker:
    return create_sessionmaker(engine)


@pytest_asyncio.fixture(scope="module")
async def postgres_harness(postgres_url: str) -> AsyncIterator[Harness]:
    from tests.harness import running_app, settings_for_tests

    async with running_app(settings_for_tests(postgres_url)) as harness:
        yield harness


@pytest_asyncio.fixture(scope="module")
async def sqlite_harness(sqlite_url: str) -> AsyncIterator[Harness]:
    from tests.harness import running_app, settings_for_tests

    async with running_app(settings_for_tests(sqlite_url)) as harness:
        yield harness


@pytest.fixture
def harness(backend: str, request: pytest.FixtureRequest) -> Harness:
    """The running app on the current backend (the test runs once per backend)."""
    value: Harness = request.getfixturevalue(f"{backend}_harness")
    return value
