"""Profile of one paper order and one live (fake Alpaca, BYOB) order, placed one at a time
through the app in process: SQL statements, transactions and round trips per order, and
CPU per order. Not a test: it prints figures.

    .venv/bin/python scripts/bench/order_profile.py [--orders N] [--database sqlite]
        [--credential-cache-seconds 0]

Also the broker stream's echo of a live order (the ingest of an update that changes
nothing), which every live order costs in production; and on Postgres the paper order's
gate read through the ORM beside the same SQL on the driver.

Round trips = statements + BEGIN + COMMIT/ROLLBACK (asyncpg sends each on its own; an
autocommit statement is one round trip and is counted as a statement, not a transaction). The fake
broker runs in this process too, so "live CPU" includes the fake's share; the paper
figure has no broker outside the database.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import functools
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from sqlalchemy import event  # noqa: E402

from app.brokers.alpaca.mapping import order_from_wire  # noqa: E402
from app.brokers.base import OrderUpdate  # noqa: E402
from app.db.migrate import upgrade  # noqa: E402
from app.db.rate_limits import PostgresRateLimiter  # noqa: E402
from app.db.repositories.connections import (  # noqa: E402
    AccountRepository,
    _account_with_connection_locking_paper_statement,
)
from app.services.order_updates import OrderUpdateIngest  # noqa: E402
from tests.conftest import new_user  # noqa: E402
from tests.postgres import fresh_database, postgres_server  # noqa: E402
from tests.services.support import live_gateway  # noqa: E402


def _autocommit(conn: Any) -> bool:
    """An autocommit connection sends no BEGIN/COMMIT: its statements are their own
    transactions (counted as round trips by the statement count alone)."""
    return bool(conn.get_execution_options().get("isolation_level") == "AUTOCOMMIT")


class Counter:
    def __init__(self) -> None:
        self.statements: collections.Counter[str] = collections.Counter()
        self.begins = 0
        self.ends = 0

    def attach(self, engine: Any) -> None:
        sync = engine.sync_engine

        @event.listens_for(sync, "before_cursor_execute")
        def _stmt(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
            words = statement.split()
            kind = words[0].upper()
            table = ""
            upper = [w.upper() for w in words]
            markers = ("FROM",) if kind == "SELECT" else ("INTO", "UPDATE", "FROM")
            for marker in markers:
                if marker in upper and upper.index(marker) + 1 < len(words):
                    table = words[upper.index(marker) + 1]
                    break
            if "FOR UPDATE" in statement.upper():
                table += " (locked)"
            self.statements[f"{kind} {table}".strip()] += 1

        # The shared rate limit's slot is taken on the asyncpg driver directly (no SQLAlchemy
        # event sees it): counted here, one autocommit statement per take.
        reserve = PostgresRateLimiter.reserve
        counter = self

        async def counted(limiter: Any, *args: Any, **kwargs: Any) -> float:
            counter.statements["WITH rate_limit_buckets (driver)"] += 1
            return await reserve(limiter, *args, **kwargs)

        PostgresRateLimiter.reserve = counted  # type: ignore[method-assign]

        @event.listens_for(sync, "begin")
        def _begin(conn: Any) -> None:
            if not _autocommit(conn):
                self.begins += 1

        @event.listens_for(sync, "commit")
        def _commit(conn: Any) -> None:
            if not _autocommit(conn):
                self.ends += 1

        @event.listens_for(sync, "rollback")
        def _rollback(conn: Any) -> None:
            if not _autocommit(conn):
                self.ends += 1

    def reset(self) -> None:
        self.statements.clear()
        self.begins = self.ends = 0


async def profile(label: str, place: Any, counter: Counter, orders: int, vault: Any) -> None:
    for _ in range(10):  # warm up
        await place()
    counter.reset()
    decrypts = vault.decrypts
    cpu: list[float] = []
    wall: list[float] = []
    for _ in range(orders):
        c0, w0 = time.process_time(), time.perf_counter()
        response = await place()
        cpu.append((time.process_time() - c0) * 1000)
        wall.append((time.perf_counter() - w0) * 1000)
        assert response.status_code in (201, 202), response.text
    total = sum(counter.statements.values())
    print(f"\n{label}: {orders} orders, one at a time")
    print(
        f"  statements/order {total / orders:.1f}, transactions/order {counter.ends / orders:.1f}"
    )
    print(f"  round trips/order {(total + counter.begins + counter.ends) / orders:.1f}")
    print(f"  credentials decrypted/order {(vault.decrypts - decrypts) / orders:.2f}")
    print(
        f"  CPU ms/order p50 {statistics.median(cpu):.2f} mean {statistics.mean(cpu):.2f}; "
        f"wall ms p50 {statistics.median(wall):.2f}"
    )
    for name, count in sorted(counter.statements.items(), key=lambda kv: -kv[1]):
        print(f"    {count / orders:5.2f}  {name}")


async def run(url: str, orders: int, cache_seconds: float) -> None:
    async with live_gateway(
        url, paper_first_cycles=0, credential_cache_seconds=cache_seconds
    ) as gw:
        h = gw.harness
        engine = h.state.ctx.sessionmaker.kw["bind"]
        counter = Counter()
        counter.attach(engine)
        user = new_user()
        _, paper = await h.paper_account(user, starting_cash="100000000")
        vault = h.state.ctx.vault
        await profile("paper market buy", lambda: h.place(user, paper), counter, orders, vault)
        live_user = new_user()
        _, live = await gw.connect_byob(live_user)
        await profile(
            "live Alpaca (BYOB) limit buy",
            lambda: h.place(live_user, live, order_type="limit", limit_price="1.00"),
            counter,
            orders,
            vault,
        )
        await stream_echo(gw, live_user, live, counter, orders)
        await open_credential(h, live_user, live, orders * 5)
        if engine.dialect.name == "postgresql":
            await gate_read(h, user, paper, orders * 5)


async def stream_echo(gw: Any, user: str, account_id: str, counter: Counter, times: int) -> None:
    """A live order's news from the broker's stream, arriving after the order's answer was
    recorded (Alpaca's trade_updates ``new`` beside the REST answer): what the ingest costs
    for each live order in production, where every live connection's stream runs. The
    update is the fake's own order, mapped as the Alpaca stream maps it; it changes
    nothing (a duplicate), so every call takes the same path."""
    h = gw.harness
    placed = await h.place(user, account_id, order_type="limit", limit_price="1.00")
    assert placed.status_code == 201, placed.text
    wire = next(
        o
        for o in gw.alpaca.fake.accounts[gw.byob_key.key_id].orders.values()
        if o.id == placed.json()["broker_order_id"]
    ).wire()
    async with h.state.ctx.sessionmaker() as session:
        account = await AccountRepository.for_user(session, user).get(account_id)
        assert account is not None
        ref = account.broker_account_ref
    update = OrderUpdate(ref, order_from_wire(wire), datetime.now(UTC))
    ingest = OrderUpdateIngest(h.state.ctx.sessionmaker, "alpaca")
    for _ in range(10):
        await ingest(update)
    counter.reset()
    cpu: list[float] = []
    for _ in range(times):
        c0 = time.process_time()
        await ingest(update)
        cpu.append((time.process_time() - c0) * 1000)
    total = sum(counter.statements.values())
    print(f"\nthe stream's echo of a live order (ingested, nothing new): {times} times")
    print(
        f"  statements/echo {total / times:.1f}, round trips/echo "
        f"{(total + counter.begins + counter.ends) / times:.1f}"
    )
    print(f"  CPU ms/echo p50 {statistics.median(cpu):.2f} mean {statistics.mean(cpu):.2f}")
    for name, count in sorted(counter.statements.items(), key=lambda kv: -kv[1]):
        print(f"    {count / times:5.2f}  {name}")


async def gate_read(h: Any, user: str, account_id: str, times: int) -> None:
    """A paper order's first statement (its account and connection with the paper account
    locked, ``AccountRepository.get_locking_paper``) through the ORM, beside the same SQL
    with the same parameters sent on the asyncpg driver, and beside an empty transaction:
    what SQLAlchemy's execution and the two entities' loading cost over the driver."""
    sessionmaker = h.state.ctx.sessionmaker
    stmt = _account_with_connection_locking_paper_statement(scoped=True)
    params = {"a_id": account_id, "paper_slug": "paper", "p_symbol": "AAPL", "a_user_id": user}
    async with sessionmaker() as session:
        compiled = stmt.compile(dialect=(await session.connection()).dialect)
    sql, args = compiled.string, [params[name] for name in compiled.positiontup or ()]

    async def on_the_driver(*, read: bool) -> None:
        # SQLAlchemy sends BEGIN with a connection's first statement: here asyncpg does.
        async with sessionmaker() as session:
            raw = await (await session.connection()).get_raw_connection()
            assert raw.driver_connection is not None
            transaction = raw.driver_connection.transaction()
            await transaction.start()
            if read:
                assert await raw.driver_connection.fetchrow(sql, *args) is not None
            await transaction.rollback()

    async def through_the_orm() -> None:
        async with sessionmaker() as session:
            found = await AccountRepository.for_user(session, user).get_locking_paper(
                account_id, paper_slug="paper", symbol="AAPL"
            )
            assert found is not None
            assert found[2] is not None  # the paper rows, read under the lock
            await session.rollback()

    print(
        f"\nthe paper order's gate read ({len(stmt.selected_columns)} columns), "
        f"in a transaction rolled back: {times} times"
    )
    for label, read in (
        ("BEGIN and ROLLBACK alone", functools.partial(on_the_driver, read=False)),
        ("through the ORM (get_locking_paper)", through_the_orm),
        ("the same SQL on the driver", functools.partial(on_the_driver, read=True)),
    ):
        for _ in range(20):
            await read()
        cpu: list[float] = []
        for _ in range(times):
            c0 = time.process_time()
            await read()
            cpu.append((time.process_time() - c0) * 1e6)
        print(f"  {label:36s} CPU us p50 {statistics.median(cpu):4.0f}")


async def open_credential(h: Any, user: str, account_id: str, times: int) -> None:
    """The order path's credential step alone: the connection row read and
    ``adapter_for(..., for_order=True)``, each in its own session as a request does."""
    ctx = h.state.ctx
    cpu: list[float] = []
    wall: list[float] = []
    for _ in range(times):
        c0, w0 = time.process_time(), time.perf_counter()
        async with ctx.sessionmaker() as session:
            found = await AccountRepository.for_user(session, user).get_with_connection(account_id)
            assert found is not None
            await ctx.adapter_for(session, found[1], for_order=True)
        cpu.append((time.process_time() - c0) * 1e6)
        wall.append((time.perf_counter() - w0) * 1e6)
    print(f"\nopening the live credential (account+connection read, adapter): {times} times")
    print(
        f"  CPU us p50 {statistics.median(cpu):.0f} mean {statistics.mean(cpu):.0f}; "
        f"wall us p50 {statistics.median(wall):.0f}"
    )


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--orders", type=int, default=100)
    parser.add_argument("--database", choices=["postgres", "sqlite"], default="postgres")
    parser.add_argument(
        "--credential-cache-seconds",
        type=float,
        default=60.0,
        help="BROKERAGE_CREDENTIAL_CACHE_SECONDS (0: every order opens its credential)",
    )
    args = parser.parse_args()
    if args.database == "sqlite":
        with tempfile.TemporaryDirectory() as tmp:
            url = f"sqlite+aiosqlite:///{tmp}/profile.db"
            await asyncio.to_thread(upgrade, url)
            await run(url, args.orders, args.credential_cache_seconds)
        return
    async with postgres_server() as admin, fresh_database(admin) as url:
        await asyncio.to_thread(upgrade, url)
        await run(url, args.orders, args.credential_cache_seconds)


if __name__ == "__main__":
    asyncio.run(main())
