"""Shared running instances: two on one Postgres database (A and B) and one on SQLite.

Tests isolate themselves by user (``new_user()``), so the instances are shared by the
whole module (as its databases are: ``tests/conftest.py``); a test that needs other stream
settings starts its own with ``serve``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import pytest_asyncio

from app.streaming.config import StreamSettings
from tests.harness import settings_for_tests
from tests.streaming.support import Instance, serve

# Short heartbeats so the heartbeat test need not wait 15 s; everything else is default.
SHARED_STREAM = StreamSettings(heartbeat_seconds=0.5)


@pytest_asyncio.fixture(scope="module")
async def pg_a(postgres_url: str) -> AsyncIterator[Instance]:
    async with serve(settings_for_tests(postgres_url), SHARED_STREAM) as instance:
        yield instance


@pytest_asyncio.fixture(scope="module")
async def pg_b(pg_a: Instance) -> AsyncIterator[Instance]:
    # Same database and JWT secret as A: a second instance of the same deployment.
    async with serve(pg_a.settings, SHARED_STREAM) as instance:
        yield instance


@pytest_asyncio.fixture(scope="module")
async def sqlite_instance(sqlite_url: str) -> AsyncIterator[Instance]:
    async with serve(settings_for_tests(sqlite_url), SHARED_STREAM) as instance:
        yield instance


@pytest.fixture
def instance(backend: str, request: pytest.FixtureRequest) -> Instance:
    """The shared instance of the current backend (the test runs once per backend)."""
    name = "pg_a" if backend == "postgres" else "sqlite_instance"
    value: Instance = request.getfixturevalue(name)
    return value


@pytest.fixture
def db_backend_url(backend: str, request: pytest.FixtureRequest) -> str:
    return str(request.getfixturevalue(f"{backend}_url"))
