"""Find a Postgres server for the test run, or start one.

Order: ``TEST_DATABASE_URL``; a server already listening on 127.0.0.1:5432; a throwaway
cluster from local server binaries (``initdb``/``pg_ctl``); a testcontainers container where
a Docker engine runs. If none works the run fails loudly: the suite never silently falls
back to SQLite only.
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import socket
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import asyncpg


def _port_open(host: str, port: int) -> bool:
    with contextlib.closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


def free_port() -> int:
    with contextlib.closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _find_binary(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), reverse=True)
    return candidates[0] if candidates else None


def _as_asyncpg_dsn(url: str) -> str:
    return url.replace("postgresql+asyncpg://", "postgresql://", 1)


def _as_sqlalchemy_url(url: str) -> str:
    for prefix in ("postgresql+asyncpg://", "postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+asyncpg://" + url[len(prefix) :]
    raise ValueError(f"not a Postgres URL: {url}")


async def _probe(dsn: str) -> bool:
    try:
        conn = await asyncpg.connect(_as_asyncpg_dsn(dsn), timeout=3)
    except (OSError, asyncpg.PostgresError, TimeoutError):
        return False
    await conn.close()
    return True


@contextlib.contextmanager
def _throwaway_cluster() -> Iterator[str]:
    initdb, pg_ctl = _find_binary("initdb"), _find_binary("pg_ctl")
    if not initdb or not pg_ctl:
        raise LookupError("no initdb/pg_ctl binaries")
    workdir = Path(tempfile.mkdtemp(prefix="brokerage-pg-"))
    datadir = workdir / "data"
    port = free_port()
    run_as: list[str] = []
    if os.geteuid() == 0:  # initdb refuses to run as root
        run_as = ["runuser", "-u", "postgres", "--"]
        shutil.chown(workdir, "postgres")
    subprocess.run(  # noqa: S603
        [*run_as, initdb, "-D", str(datadir), "-A", "trust", "-U", "postgres", "--no-sync"],
        check=True,
        capture_output=True,
    )
    opts = f"-p {port} -k {workdir} -c listen_addresses=127.0.0.1 -c fsync=off"
    subprocess.run(  # noqa: S603
        [
            *run_as,
            pg_ctl,
            "-D",
            str(datadir),
            "-o",
            opts,
            "-w",
            "-l",
            str(workdir / "log"),
            "start",
        ],
        check=True,
        capture_output=True,
    )
    try:
        yield f"postgresql+asyncpg://postgres@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run(  # noqa: S603
            [*run_as, pg_ctl, "-D", str(datadir), "-m", "immediate", "stop"],
            check=False,
            capture_output=True,
        )
        shutil.rmtree(workdir, ignore_errors=True)


@contextlib.contextmanager
def _testcontainer() -> Iterator[str]:
    from testcontainers.postgres import PostgresContainer

    with PostgresContainer("postgres:16-alpine", driver="asyncpg") as container:
        yield container.get_connection_url()


@contextlib.asynccontextmanager
async def postgres_server():  # type: ignore[no-untyped-def]
    """Yield the SQLAlchemy URL of an admin database on some reachable Postgres server."""
    explicit = os.environ.get("TEST_DATABASE_URL")
    if explicit:
        yield _as_sqlalchemy_url(explicit)
        return
    for user in ("postgres", os.environ.get("USER", "root")):
        local = f"postgresql+asyncpg://{user}@127.0.0.1:5432/postgres"
        if _port_open("127.0.0.1", 5432) and await _probe(local):
            yield local
            return
    with contextlib.ExitStack() as stack:
        errors: list[str] = []
        for starter in (_throwaway_cluster, _testcontainer):
            try:
                url = stack.enter_context(starter())
            except Exception as exc:
                errors.append(f"{starter.__name__}: {exc}")
                continue
            yield url
            return
        raise RuntimeError(
            "no Postgres for the tests: set TEST_DATABASE_URL, run a server on 127.0.0.1:5432, "
            "install the PostgreSQL server binaries, or run Docker. Tried: " + "; ".join(errors)
        )


@contextlib.asynccontextmanager
async def fresh_database(admin_url: str, template: str | None = None):  # type: ignore[no-untyped-def]
    """Create a uniquely named database (a copy of ``template``, if given) and drop it
    afterwards. A template must have no open connections while it is copied."""
    name = f"brokerage_test_{uuid.uuid4().hex[:12]}"
    copy_of = f' TEMPLATE "{template}"' if template else ""
    admin = await asyncpg.connect(_as_asyncpg_dsn(admin_url))
    try:
        await admin.execute(f'CREATE DATABASE "{name}"{copy_of}')
    finally:
        await admin.close()
    base, _, _ = admin_url.rpartition("/")
    try:
        yield f"{base}/{name}"
    finally:
        admin = await asyncpg.connect(_as_asyncpg_dsn(admin_url))
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.close()
