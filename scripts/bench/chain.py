"""Driver for scripts/bench/chain (see that file). Not a test: it prints figures.

Both servers run in this process under uvicorn on real sockets (the gateway with its
production stack on Postgres; the bare app with nothing but FastAPI), and the client talks
to them over HTTP, one request at a time, so the two are measured alike.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import socket
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import uvicorn
from fastapi import FastAPI
from fastapi.responses import JSONResponse
from pydantic import SecretStr

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from app.config import Settings  # noqa: E402
from app.db.migrate import upgrade  # noqa: E402
from app.main import create_app  # noqa: E402
from app.security.jwt import issue_dev_token  # noqa: E402
from tests.harness import keyring_json_for_tests  # noqa: E402
from tests.postgres import fresh_database, postgres_server  # noqa: E402

UNDERLYING = "AAPL"


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def free_port() -> int:
    with contextlib.closing(socket.socket()) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.asynccontextmanager
async def serving(app: Any, port: int) -> Any:
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")
    )
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()
        await asyncio.sleep(0.05)
    try:
        yield
    finally:
        server.should_exit = True
        await task


async def measure(client: httpx.AsyncClient, url: str, n: int, warmup: int) -> list[float]:
    for _ in range(warmup):
        (await client.get(url)).raise_for_status()
    times = []
    for _ in range(n):
        start = time.perf_counter()
        response = await client.get(url)
        times.append((time.perf_counter() - start) * 1000)
        response.raise_for_status()
    return times


async def run(args: argparse.Namespace, database_url: str) -> None:
    await asyncio.to_thread(upgrade, database_url)
    results: dict[str, list[float]] = {}
    page: Any = None
    total = 0
    for cache_seconds in (5.0, 0.0):
        settings = Settings(
            environment="production",
            database_url=database_url,
            jwt_secret=SecretStr("bench-secret-" + os.urandom(32).hex()),
            keyring_json=SecretStr(keyring_json_for_tests()),
            audit_key=SecretStr("bench-audit-key-" + os.urandom(16).hex()),
            background_tasks=False,
            auto_migrate_setting=False,
            option_chain_cache_seconds=cache_seconds,
        )
        app = create_app(settings)
        port = free_port()
        async with serving(app, port):
            engine = app.state.brokerage.ctx.paper_engine
            # List enough strikes that the underlying has at least --contracts contracts.
            while True:
                total = sum(
                    2 * len(engine.options.strikes(UNDERLYING))
                    for _ in engine.option_expirations(UNDERLYING)
                )
                if total >= args.contracts:
                    break
                engine.options.strikes_each_side += 1
            assert settings.jwt_secret is not None
            token = issue_dev_token(settings.jwt_secret, "bench-user")
            headers = {"Authorization": f"Bearer {token}"}
            async with httpx.AsyncClient(
                base_url=f"http://127.0.0.1:{port}", headers=headers, timeout=30
            ) as client:
                created = await client.post(
                    "/v1/connections",
                    json={"broker": "paper", "options": {"starting_cash": "100000"}},
                )
                created.raise_for_status()
                account = created.json()["accounts"][0]
                url = f"/v1/accounts/{account}/options/chain?underlying={UNDERLYING}&limit=500"
                first = await client.get(url)
                first.raise_for_status()
                page = first.json()
                label = "gateway, cache 5 s" if cache_seconds else "gateway, cache off"
                results[label] = await measure(client, url, args.requests, args.warmup)

    bare = FastAPI()
    body = page

    @bare.get("/chain")
    async def chain() -> JSONResponse:
        return JSONResponse(body)

    port = free_port()
    async with (
        serving(bare, port),
        httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30) as client,
    ):
        results["bare FastAPI, same JSON"] = await measure(
            client, "/chain", args.requests, args.warmup
        )

    print(
        f"chain of {UNDERLYING}: {total} contracts listed, pages of {len(page['items'])} "
        f"({len(httpx.Response(200, json=page).content)} bytes); "
        f"{args.requests} requests each after {args.warmup} warm-up"
    )
    base50 = percentile(results["bare FastAPI, same JSON"], 0.5)
    base99 = percentile(results["bare FastAPI, same JSON"], 0.99)
    for label, times in results.items():
        p50, p99 = percentile(times, 0.5), percentile(times, 0.99)
        print(
            f"  {label:<24} p50 {p50:8.2f} ms  p99 {p99:8.2f} ms"
            f"  ratio p50 {p50 / base50:6.2f}  p99 {p99 / base99:6.2f}"
        )


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--contracts", type=int, default=2000)
    args = parser.parse_args()
    explicit = os.environ.get("BENCH_DATABASE_URL")
    async with postgres_server() as admin, fresh_database(explicit or admin) as url:
        await run(args, url)


if __name__ == "__main__":
    asyncio.run(main())
