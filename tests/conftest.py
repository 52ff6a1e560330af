"""Shared fixtures: a migrated Postgres database and a migrated SQLite file per test run.

Tests isolate themselves by creating their own users (``new_user()``), so no table is
truncated between tests and every test sees the other tests' rows, as production would.
"""

from __future__ import annotations

import asyncio
import contextlib
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
async def postgres_url() -> AsyncIterator[str]:
    async with postgres_server() as admin_url, fresh_database(admin_url) as url:
        await asyncio.to_thread(upgrade, url)
        yield url


@pytest_asyncio.fixture(scope="session")
async def sqlite_url(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[str]:
    path: Path = tmp_path_factory.mktemp("sqlite") / "brokerage.db"
    url = f"sqlite+aiosqlite:///{path}"
    await asyncio.to_thread(upgrade, url)
    yield url


@pytest.fixture(params=["postgres", "sqlite"])
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest_asyncio.fixture(scope="session")
async def postgres_engine(postgres_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(postgres_url)
    yield engine
    await engine.dispose()


@pytest_asyncio.fixture(scope="session")
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


@pytest_asyncio.fixture(scope="session")
async def postgres_harness(postgres_url: str) -> AsyncIterator[Harness]:
    from tests.harness import running_app, settings_for_tests

    async with running_app(settings_for_tests(postgres_url)) as harness:
        yield harness


@pytest_asyncio.fixture(scope="session")
async def sqlite_harness(sqlite_url: str) -> AsyncIterator[Harness]:
    from tests.harness import running_app, settings_for_tests

    async with running_app(settings_for_tests(sqlite_url)) as harness:
        yield harness


@pytest.fixture
def harness(backend: str, request: pytest.FixtureRequest) -> Harness:
    """The running app on the current backend (the test runs once per backend)."""
    value: Harness = request.getfixturevalue(f"{backend}_harness")
    return value
