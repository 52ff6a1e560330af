"""Driver for scripts/bench/group_commit (see that file). Not a test: it prints figures.

Does group commit pay? Paper market orders placed through the real ``OrderService`` (the
gates, the idempotency claim, the paper engine inside the order's transaction, the events,
the stored response), in this process, on Postgres, by ``--clients`` (64) clients each
with a paper account of its own (a user each) that place one order after another:

- ``k=1``: ``OrderService.place`` as the API calls it, one transaction per order;
- ``k=4, 16, 64``: group commit, written here (the service is unchanged): a placement
  waits in a queue; a committer takes up to k waiting placements, runs each through the
  same ``OrderService`` code on one shared session whose ``commit`` only flushes, commits
  once for all, and only then answers each. ``ceil(clients / k)`` committers run at once.
  A placement that fails or rolls back (a refusal, a failed statement) either aborts its
  batch, which is rolled back and each of its placements placed again on its own
  (``OrderService.place``, one transaction each: ``--isolation replay``, the default), or
  rolls back to a savepoint of its own taken before it, the others going on
  (``--isolation savepoint``: SAVEPOINT and RELEASE, two more round trips per order).
  ``--poison-every N`` makes every Nth order one the paper broker refuses.

Order events are written with each order: the order path writes them with Core statements
(no ORM objects to hold back), and on Postgres the outbox's ordering lock is taken inside
COMMIT by a deferred trigger (app/streaming/outbox.py, migration 0017), so a batch holds it
once, at its commit, wherever its events were written.

Prints, per k: orders/s, commits/s (COMMITs the bench sent, counted on its engine; the
database's own ``xact_commit`` beside it), latency p50/p99, the mean batch size, CPU ms per
order of this process (``time.process_time``) and of the database's Postgres backends
(/proc), and Postgres' own commit settings.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import math
import os
import statistics
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from sqlalchemy import event  # noqa: E402

from app.db.migrate import upgrade  # noqa: E402
from app.errors import AppError  # noqa: E402
from app.schemas.orders import OrderCreate  # noqa: E402
from app.services.orders import OrderService, StoredResponse  # noqa: E402
from scripts.bench.launch import (  # noqa: E402
    LockWaits,
    asyncpg_dsn,
    cpu_ms_between,
    cpu_ticks,
    postgres_pids,
    postgres_settings,
)
from tests.harness import running_app, settings_for_tests  # noqa: E402
from tests.postgres import fresh_database, postgres_server  # noqa: E402

COMMIT_SETTINGS = (
    "synchronous_commit",
    "commit_delay",
    "commit_siblings",
    "fsync",
    "wal_sync_method",
    "wal_writer_delay",
)

GOOD = OrderCreate.model_validate(
    {"symbol": "AAPL", "side": "buy", "quantity": "1", "order_type": "market"}
)
# Far beyond the account's cash: the paper broker refuses it (a stored 4xx, rejected order).
POISON = OrderCreate.model_validate(
    {"symbol": "AAPL", "side": "buy", "quantity": "1000000000", "order_type": "market"}
)


class BatchAborted(Exception):
    """A placement in the batch rolled back (a refusal, a failed statement)."""


class BatchSession:
    """The batch's session as one placement's code sees it: ``commit`` flushes (the batch
    commits once for all), closing leaves it open, every other attribute is the real
    session's. ``rollback`` aborts the batch (``savepoints=False``), or rolls the placement
    back to its savepoint and opens a fresh one for what the service does next, e.g.
    recording a refusal (``savepoints=True``)."""

    def __init__(self, real: Any, *, savepoints: bool) -> None:
        self._real = real
        self._savepoints = savepoints
        self._nested: Any = None

    async def __aenter__(self) -> BatchSession:
        return self

    async def __aexit__(self, *exc: object) -> None:
        return None

    async def begin_placement(self) -> None:
        if self._savepoints:
            self._nested = await self._real.begin_nested()

    async def abandon_placement(self) -> None:
        """The placement ended with an error answer: undo what it left (savepoints only)."""
        if self._nested is not None and self._nested.is_active:
            await self._nested.rollback()
        self._nested = None

    async def commit(self) -> None:
        await self._real.flush()
        if self._nested is not None:
            await self._nested.commit()  # RELEASE SAVEPOINT
            self._nested = None

    async def rollback(self) -> None:
        if not self._savepoints:
            raise BatchAborted
        await self.abandon_placement()
        await self.begin_placement()

    async def close(self) -> None:
        return None

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)


@dataclasses.dataclass
class Placement:
    user_id: str
    account_id: str
    body: OrderCreate
    answer: asyncio.Future[StoredResponse | AppError]

    def kwargs(self) -> dict[str, Any]:
        return {
            "user_id": self.user_id,
            "account_id": self.account_id,
            "body": self.body,
            "idempotency_key": uuid.uuid4().hex,
            "path": f"/v1/accounts/{self.account_id}/orders",
        }


async def place_alone(service: OrderService, p: Placement) -> StoredResponse | AppError:
    try:
        return await service.place(**p.kwargs())
    except AppError as exc:  # answered as problem+json by the API
        return exc


class GroupCommitter:
    def __init__(self, ctx: Any, service: OrderService, k: int, *, savepoints: bool) -> None:
        self._ctx = ctx
        self._service = service
        self._k = k
        self._savepoints = savepoints
        self.queue: asyncio.Queue[Placement] = asyncio.Queue()
        self.batches: list[int] = []
        self.aborted = 0

    async def run(self) -> None:
        while True:
            batch = [await self.queue.get()]
            while len(batch) < self._k and not self.queue.empty():
                batch.append(self.queue.get_nowait())
            self.batches.append(len(batch))
            await self._commit(batch)

    async def _commit(self, batch: list[Placement]) -> None:
        answers: list[StoredResponse | AppError]
        async with self._ctx.sessionmaker() as real:
            shared = BatchSession(real, savepoints=self._savepoints)
            ctx = dataclasses.replace(self._ctx, sessionmaker=lambda: shared)
            service = OrderService(ctx)
            try:
                answers = []
                for p in batch:
                    await shared.begin_placement()
                    try:
                        answers.append(await service.place(**p.kwargs()))
                    except AppError as exc:
                        if not self._savepoints:
                            raise
                        await shared.abandon_placement()  # its answer is the error
                        answers.append(exc)
                await real.commit()
            except Exception:
                await real.rollback()
                self.aborted += 1
                answers = list(
                    await asyncio.gather(*(place_alone(self._service, p) for p in batch))
                )
        for p, answer in zip(batch, answers, strict=True):
            p.answer.set_result(answer)


@dataclasses.dataclass
class Phase:
    k: int
    orders: int = 0
    refused: int = 0
    errors: dict[str, int] = dataclasses.field(default_factory=dict)
    latencies: list[float] = dataclasses.field(default_factory=list)
    seconds: float = 0.0
    commits: int = 0
    db_commits: int = 0
    bench_cpu_ms: float = 0.0
    pg_cpu_ms: float = 0.0
    mean_batch: float = 1.0
    aborted: int = 0
    lock_waiters: float = 0.0


async def db_commits(url: str) -> int:
    import asyncpg

    conn = await asyncpg.connect(asyncpg_dsn(url))
    try:
        value = await conn.fetchval(
            "SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()"
        )
    finally:
        await conn.close()
    return int(value)


async def run_phase(
    url: str,
    place: Callable[[Placement], Awaitable[StoredResponse | AppError]],
    accounts: list[tuple[str, str]],
    phase: Phase,
    seconds: float,
    poison_every: int,
    counter: list[int],
) -> None:
    placed = [0]
    stop = time.monotonic() + seconds
    loop = asyncio.get_running_loop()

    async def client(user_id: str, account_id: str) -> None:
        while time.monotonic() < stop:
            placed[0] += 1
            body = POISON if poison_every and placed[0] % poison_every == 0 else GOOD
            started = time.perf_counter()
            answer = await place(Placement(user_id, account_id, body, loop.create_future()))
            phase.latencies.append((time.perf_counter() - started) * 1000)
            if isinstance(answer, AppError):
                phase.errors[answer.code] = phase.errors.get(answer.code, 0) + 1
            elif answer.status == 201:
                phase.orders += 1
            else:
                phase.refused += 1

    pids = await postgres_pids(url)
    pg_before, cpu_before = cpu_ticks(pids), time.process_time()
    commits_before, db_before = counter[0], await db_commits(url)
    started = time.perf_counter()
    async with LockWaits(url) as waits:
        await asyncio.gather(*(client(u, a) for u, a in accounts))
    phase.seconds = time.perf_counter() - started
    phase.lock_waiters = waits.mean().get("advisory", 0.0)
    phase.bench_cpu_ms = (time.process_time() - cpu_before) * 1000
    phase.pg_cpu_ms = cpu_ms_between(pg_before, cpu_ticks(pids))
    phase.commits = counter[0] - commits_before
    # Backends report their counters when idle, at most once a second.
    await asyncio.sleep(1.5)
    phase.db_commits = await db_commits(url) - db_before


async def run(url: str, args: argparse.Namespace) -> list[Phase]:
    settings = settings_for_tests(url, log_json=False, log_level="WARNING")
    async with running_app(settings) as h:
        ctx = h.state.ctx
        engine = ctx.sessionmaker.kw["bind"]
        counter = [0]

        @event.listens_for(engine.sync_engine, "commit")
        def _commit(conn: Any) -> None:
            counter[0] += 1

        accounts = []
        for n in range(args.clients):
            user = f"gc-user-{n}"
            _, account = await h.paper_account(user, starting_cash="1000000000")
            accounts.append((user, account))
        service = OrderService(ctx)

        async def alone(p: Placement) -> StoredResponse | AppError:
            return await place_alone(service, p)

        phases = []
        for k in [1, *args.k] * args.rounds:
            phase = Phase(k)
            if k == 1:
                place: Callable[[Placement], Awaitable[StoredResponse | AppError]] = alone
                committer = None
                tasks: list[asyncio.Task[None]] = []
            else:
                committer = GroupCommitter(
                    ctx,
                    service,
                    k,
                    savepoints=args.isolation == "savepoint",
                )
                tasks = [
                    asyncio.create_task(committer.run()) for _ in range(math.ceil(args.clients / k))
                ]

                async def place(p: Placement, c: GroupCommitter = committer) -> Any:
                    await c.queue.put(p)
                    return await p.answer

            # Warm-up (connections, caches), unmeasured.
            await run_phase(url, place, accounts, Phase(k), 2.0, args.poison_every, counter)
            if committer is not None:
                committer.batches.clear()
                committer.aborted = 0
            await run_phase(url, place, accounts, phase, args.seconds, args.poison_every, counter)
            if committer is not None:
                phase.mean_batch = statistics.fmean(committer.batches or [1])
                phase.aborted = committer.aborted
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            phases.append(phase)
            print(f"k={k} done: {phase.orders / phase.seconds:.0f} orders/s", file=sys.stderr)
        return phases


def report(phases: list[Phase], args: argparse.Namespace, pg: dict[str, str]) -> None:
    variant = "events written with each order"
    variant += (
        "; a failed placement rolls back to its savepoint"
        if args.isolation == "savepoint"
        else "; a failed placement aborts its batch, replayed one by one"
    )
    print(
        f"group commit: paper market orders through OrderService in one process, "
        f"{args.clients} clients (a user and account each), {args.seconds:g} s per k, "
        f"Postgres {pg.pop('server_version')}; {variant}"
        + (f"; every {args.poison_every}th order refused" if args.poison_every else "")
    )
    print("Postgres: " + ", ".join(f"{name}={value}" for name, value in pg.items()))
    print(
        f"{'k':>3} | {'orders/s':>8} {'commits/s':>9} {'db xact/s':>9} | {'p50 ms':>7} "
        f"{'p99 ms':>7} | {'batch':>5} {'aborted':>7} | {'lock wait':>9} | "
        "CPU ms/order bench / pg | other"
    )
    for p in phases:
        placed = p.orders + p.refused + sum(p.errors.values())
        other = f"refused {p.refused}" if p.refused else ""
        if p.errors:
            other += f" errors {p.errors}"
        print(
            f"{p.k:>3} | {p.orders / p.seconds:>8.0f} {p.commits / p.seconds:>9.0f} "
            f"{p.db_commits / p.seconds:>9.0f} | "
            f"{statistics.median(p.latencies):>7.1f} "
            f"{statistics.quantiles(p.latencies, n=100)[98]:>7.1f} | "
            f"{p.mean_batch:>5.1f} {p.aborted:>7} | {p.lock_waiters:>9.1f} | "
            f"{p.bench_cpu_ms / max(placed, 1):>6.2f} / {p.pg_cpu_ms / max(placed, 1):.2f} | "
            f"{other}"
        )
    print(
        "lock wait: sessions waiting for the outbox lock (pg_stat_activity, mean of samples "
        "every 100 ms); aborted: batches rolled back and placed again one by one"
    )
    load = os.getloadavg()
    print(f"load: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")


async def main(args: argparse.Namespace) -> None:
    explicit = os.environ.get("BENCH_DATABASE_URL")
    async with postgres_server() as admin, fresh_database(explicit or admin) as url:
        await asyncio.to_thread(upgrade, url)
        pg = await postgres_settings(url, COMMIT_SETTINGS)
        phases = await run(url, args)
    report(phases, args, pg)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--clients", type=int, default=64)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--k", type=int, action="append", help="batch sizes (default 4 16 64)")
    parser.add_argument("--poison-every", type=int, default=0, help="refuse every Nth order")
    parser.add_argument(
        "--isolation",
        choices=("replay", "savepoint"),
        default="replay",
        help="a failed placement: abort and replay its batch one by one, or roll back to "
        "its own savepoint (2 more round trips per order)",
    )
    parser.add_argument("--rounds", type=int, default=1, help="run the k sequence N times")
    parsed = parser.parse_args()
    parsed.k = parsed.k or [4, 16, 64]
    asyncio.run(main(parsed))
