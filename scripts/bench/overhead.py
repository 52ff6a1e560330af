"""Driver for scripts/bench/overhead (see that file). Not a test: it prints figures."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import os
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
from pydantic import SecretStr

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from app.db.migrate import upgrade  # noqa: E402
from app.security.jwt import issue_dev_token  # noqa: E402
from scripts.bench.launch import (  # noqa: E402
    AlpacaKey,
    cpu_ms_between,
    cpu_ticks,
    fake_alpaca,
    gateway_env,
    start_server,
    stop_server,
)
from tests.postgres import free_port, fresh_database, postgres_server  # noqa: E402


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def order_body(n: int) -> dict[str, str]:
    # Far below the market: the order rests, so every run measures the same path.
    return {
        "symbol": "AAPL",
        "side": "buy",
        "quantity": "1",
        "order_type": "limit",
        "limit_price": "1.00",
        "time_in_force": "gtc",
    }


@contextlib.asynccontextmanager
async def database(kind: str) -> AsyncIterator[str]:
    """A migrated database: Postgres (production's store; BENCH_DATABASE_URL or the test
    discovery) or an SQLite file (the embedded mode)."""
    if kind == "sqlite":
        with tempfile.TemporaryDirectory() as tmp:
            url = f"sqlite+aiosqlite:///{tmp}/bench.db"
            await asyncio.to_thread(upgrade, url)
            yield url
        return
    explicit = os.environ.get("BENCH_DATABASE_URL")
    async with postgres_server() as admin, fresh_database(explicit or admin) as url:
        await asyncio.to_thread(upgrade, url)
        yield url


@contextlib.asynccontextmanager
async def gateway_process(
    url: str, jwt_secret: str, fake_url: str, *, upstream_stream: bool = False
) -> AsyncIterator[tuple[str, int]]:
    """The gateway as production runs it (``python -m app.cli serve``: uvloop, the h11
    protocol of app/server.py, its background tasks), one process of its own, so its CPU
    is not this one's; yields its URL and process id."""
    port = free_port()
    server = await asyncio.to_thread(
        start_server,
        [sys.executable, "-m", "app.cli", "serve", "--port", str(port)],
        # Every order the bench places rests. The paper ticker (each resting paper order
        # every tick) and the reconciler (each open live order at its broker) would look at
        # them again and again in the gateway's event loop, charging that to the orders
        # measured after them: both wait a day here. This bench is the order path's cost.
        gateway_env(url, jwt_secret, fake_url)
        | {
            "BROKERAGE_PAPER_TICK_SECONDS": "86400",
            "BROKERAGE_RECONCILE_INTERVAL_SECONDS": "86400",
            # --upstream-stream: the connection's trade_updates stream starts within a
            # second (production looks every 30 s, later than a run of this bench lasts).
            "BROKERAGE_UPSTREAM_SYNC_SECONDS": "0.5" if upstream_stream else "30",
        },
        port,
    )
    try:
        yield f"http://127.0.0.1:{port}", server.pid
    finally:
        await asyncio.to_thread(stop_server, server)


@contextlib.asynccontextmanager
async def floor_process(url: str, fake_url: str, key: AlpacaKey) -> AsyncIterator[tuple[str, int]]:
    """scripts/bench/bare_app.py in one uvicorn process of its own (its ``/live-floor``: a
    live order's database statements and broker call with none of the gateway's logic), on
    the same database and the same fake with a key of its own; yields its URL and pid."""
    port = free_port()
    server = await asyncio.to_thread(
        start_server,
        [
            str(ROOT / ".venv/bin/uvicorn"),
            "scripts.bench.bare_app:app",
            "--port",
            str(port),
            "--no-access-log",
            "--log-level",
            "warning",
        ],
        {
            **os.environ,
            "DATABASE_URL": url,
            "FLOOR_BROKER_URL": fake_url,
            "FLOOR_KEY_ID": key.key_id,
            "FLOOR_SECRET": key.secret,
        },
        port,
    )
    try:
        yield f"http://127.0.0.1:{port}", server.pid
    finally:
        await asyncio.to_thread(stop_server, server)


async def main(
    orders: int, latency_ms: float, kind: str, concurrency: int, upstream_stream: bool = False
) -> None:
    key, floor_key = AlpacaKey.new(), AlpacaKey.new()
    key_id, secret = key.key_id, key.secret
    floors: list[Floor] = []
    async with database(kind) as url:
        jwt_secret = "bench-" + uuid.uuid4().hex
        async with fake_alpaca([key, floor_key], latency_ms=latency_ms) as fake:
            fake_url = fake.url
            async with gateway_process(
                url, jwt_secret, fake_url, upstream_stream=upstream_stream
            ) as (gateway_url, gateway_pid):
                token = issue_dev_token(SecretStr(jwt_secret), "bench-user")
                auth = {"Authorization": f"Bearer {token}"}
                limits = httpx.Limits(max_connections=concurrency * 2)
                async with (
                    httpx.AsyncClient(base_url=gateway_url, timeout=30, limits=limits) as gw,
                    httpx.AsyncClient(base_url=fake_url, timeout=30, limits=limits) as direct,
                ):
                    created = await gw.post(
                        "/v1/connections",
                        headers=auth,
                        json={
                            "broker": "alpaca",
                            "credentials": {"api_key_id": key_id, "api_secret_key": secret},
                        },
                    )
                    created.raise_for_status()
                    account_id = created.json()["accounts"][0]
                    keys = {"APCA-API-KEY-ID": key_id, "APCA-API-SECRET-KEY": secret}
                    # Warm up both paths (connections, the asset cache), unmeasured.
                    for n in range(5):
                        await gw.post(
                            f"/v1/accounts/{account_id}/orders",
                            json=order_body(n),
                            headers={**auth, "Idempotency-Key": f"warm-{n}"},
                        )
                        await direct.post(
                            "/v2/orders",
                            json=direct_body(f"warm-{n}"),
                            headers=keys,
                        )
                    if upstream_stream:
                        # Room for the supervisor's next look (every 0.5 s) to start the stream.
                        await asyncio.sleep(3)
                    # The same order on the paper broker: the order path without any broker.
                    paper = await gw.post(
                        "/v1/connections", headers=auth, json={"broker": "paper", "options": {}}
                    )
                    paper.raise_for_status()
                    paper_account = paper.json()["accounts"][0]
                    on_paper: list[float] = []
                    via_gateway: list[float] = []
                    straight: list[float] = []

                    async def paper_worker(w: int) -> None:
                        for n in range(w, orders, concurrency):
                            started = time.perf_counter()
                            answer = await gw.post(
                                f"/v1/accounts/{paper_account}/orders",
                                json=order_body(n),
                                headers={**auth, "Idempotency-Key": f"paper-{n}"},
                            )
                            on_paper.append((time.perf_counter() - started) * 1000)
                            assert answer.status_code == 201, answer.text

                    async def live_worker(w: int) -> None:
                        for n in range(w, orders, concurrency):
                            started = time.perf_counter()
                            answer = await gw.post(
                                f"/v1/accounts/{account_id}/orders",
                                json=order_body(n),
                                headers={**auth, "Idempotency-Key": f"bench-{n}"},
                            )
                            via_gateway.append((time.perf_counter() - started) * 1000)
                            assert answer.status_code == 201, answer.text
                            started = time.perf_counter()
                            answer = await direct.post(
                                "/v2/orders", json=direct_body(f"direct-{n}"), headers=keys
                            )
                            straight.append((time.perf_counter() - started) * 1000)
                            assert answer.status_code == 200, answer.text

                    before = cpu_ticks([gateway_pid])
                    await asyncio.gather(*(paper_worker(w) for w in range(concurrency)))
                    between = cpu_ticks([gateway_pid])
                    await asyncio.gather(*(live_worker(w) for w in range(concurrency)))
                    after = cpu_ticks([gateway_pid])
                    paper_cpu = cpu_ms_between(before, between) / orders
                    live_cpu = cpu_ms_between(between, after) / orders
            if kind == "postgres":
                # The same pairs against the floor, with the gateway idle: what the stack
                # costs for a live order's work without the gateway's logic.
                floors = await live_floors(url, fake_url, floor_key, orders, concurrency)
    # Pairs interleave within a worker; at c>1 the pairing is by completion order, so the
    # overhead row compares the two distributions' percentiles rather than pairs.
    store = "Postgres" if kind == "postgres" else "SQLite"
    print(
        f"orders: {orders} each way, fake latency {latency_ms:g} ms, {store}, "
        f"concurrency {concurrency}; fake, gateway and client in three processes"
    )
    rows = (("gateway", via_gateway), ("direct", straight), ("paper", on_paper))
    for name, values in rows:
        print(
            f"{name:9s} p50 {percentile(values, 0.5):7.2f} ms   "
            f"p99 {percentile(values, 0.99):7.2f} ms   mean {statistics.fmean(values):7.2f} ms"
        )
    p50 = percentile(via_gateway, 0.5) - percentile(straight, 0.5)
    p99 = percentile(via_gateway, 0.99) - percentile(straight, 0.99)
    print(f"overhead  p50 {p50:7.2f} ms   p99 {p99:7.2f} ms   (gateway - direct, per percentile)")
    print("target at concurrency 1: overhead p50 <= 3 ms, p99 <= 10 ms")
    print("paper = the same order through the gateway to the paper broker (no broker call)")
    print(
        f"gateway process CPU per order: live {live_cpu:.2f} ms, paper {paper_cpu:.2f} ms "
        "(the fake's and the client's not included)"
    )
    for floor in floors:
        print(floor.describe)
        for name, values in ((floor.name, floor.latencies), ("direct", floor.straight)):
            print(
                f"{name:9s} p50 {percentile(values, 0.5):7.2f} ms   "
                f"p99 {percentile(values, 0.99):7.2f} ms   mean {statistics.fmean(values):7.2f} ms"
            )
        f50 = percentile(floor.latencies, 0.5) - percentile(floor.straight, 0.5)
        f99 = percentile(floor.latencies, 0.99) - percentile(floor.straight, 0.99)
        print(
            f"{floor.name} overhead p50 {f50:7.2f} ms   p99 {f99:7.2f} ms   ({floor.name} - direct)"
        )
        print(f"{floor.name} process CPU per order: {floor.cpu_ms:.2f} ms")


@dataclasses.dataclass
class Floor:
    """One of bare_app.py's yardsticks, measured as the gateway's live orders are: each
    call paired with a direct one."""

    name: str
    path: str
    describe: str
    latencies: list[float] = dataclasses.field(default_factory=list)
    straight: list[float] = dataclasses.field(default_factory=list)
    cpu_ms: float = 0.0


async def live_floors(
    url: str, fake_url: str, key: AlpacaKey, orders: int, concurrency: int
) -> list[Floor]:
    """The floors, one after the other, with the gateway idle: what the stack costs for the
    broker call alone, and for a live order's database work around it, with none of the
    gateway's logic."""
    floors = [
        Floor(
            "proxy",
            "/proxy-floor/acct-0",
            "proxy = bare_app.py /proxy-floor: the broker call alone through the same stack "
            "(HTTP server in, body validated, httpx out), no database",
        ),
        Floor(
            "floor",
            "/live-floor/acct-0",
            "floor = bare_app.py /live-floor: the live order's 4 statements and its broker call "
            "on the same stack, none of the gateway's logic",
        ),
    ]
    keys = {"APCA-API-KEY-ID": key.key_id, "APCA-API-SECRET-KEY": key.secret}
    limits = httpx.Limits(max_connections=concurrency * 2)
    async with (
        floor_process(url, fake_url, key) as (floor_url, floor_pid),
        httpx.AsyncClient(base_url=floor_url, timeout=30, limits=limits) as client,
        httpx.AsyncClient(base_url=fake_url, timeout=30, limits=limits) as direct,
    ):
        run = uuid.uuid4().hex[:8]

        async def place(path: str, tag: str) -> float:
            started = time.perf_counter()
            answer = await client.post(path, json=order_body(0), headers={"Idempotency-Key": tag})
            assert answer.status_code == 201, answer.text
            return (time.perf_counter() - started) * 1000

        async def direct_once(tag: str) -> float:
            started = time.perf_counter()
            answer = await direct.post("/v2/orders", json=direct_body(tag), headers=keys)
            assert answer.status_code == 200, answer.text
            return (time.perf_counter() - started) * 1000

        for floor in floors:
            for n in range(5):  # warm up, unmeasured
                await place(floor.path, f"warm-{floor.name}-{run}-{n}")
                await direct_once(f"warm-{n}")

            async def worker(w: int, floor: Floor = floor) -> None:
                for n in range(w, orders, concurrency):
                    floor.latencies.append(await place(floor.path, f"{floor.name}-{run}-{n}"))
                    floor.straight.append(await direct_once(f"{floor.name}-direct-{n}"))

            before = cpu_ticks([floor_pid])
            await asyncio.gather(*(worker(w) for w in range(concurrency)))
            floor.cpu_ms = cpu_ms_between(before, cpu_ticks([floor_pid])) / orders
    return floors


def direct_body(tag: str) -> dict[str, str]:
    return {
        "symbol": "AAPL",
        "qty": "1",
        "side": "buy",
        "type": "limit",
        "limit_price": "1.00",
        "time_in_force": "gtc",
        "client_order_id": f"{tag}-{uuid.uuid4().hex[:8]}",
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    # Alpaca allows 200 requests/min per key, and the gateway's limiter lets a burst of that
    # size through before it queues: more orders than that measure the queue (by design),
    # not the gateway's own work. 150 orders plus the warm-up and set-up stay inside it.
    parser.add_argument("--orders", type=int, default=150)
    parser.add_argument("--latency-ms", type=float, default=20.0)
    parser.add_argument("--database", choices=("postgres", "sqlite"), default="postgres")
    parser.add_argument("--concurrency", type=int, default=1)
    parser.add_argument(
        "--upstream-stream",
        action="store_true",
        help="run the connection's trade_updates stream during the live orders, as production "
        "does: each order's own update (and each direct order's) is ingested by the gateway",
    )
    args = parser.parse_args()
    asyncio.run(
        main(args.orders, args.latency_ms, args.database, args.concurrency, args.upstream_stream)
    )
