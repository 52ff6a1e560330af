"""Driver for scripts/bench/overhead (see that file). Not a test: it prints figures."""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
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

from app.config import Settings  # noqa: E402
from app.db.migrate import upgrade  # noqa: E402
from app.main import create_app  # noqa: E402
from app.security.jwt import issue_dev_token  # noqa: E402
from tests.fakes.alpaca import FakeAlpaca, serve_asgi  # noqa: E402
from tests.postgres import fresh_database, postgres_server  # noqa: E402


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


async def main(orders: int, latency_ms: float, kind: str) -> None:
    fake = FakeAlpaca()
    account = fake.add_account(cash="100000000")
    async with database(kind) as url:
        keyring = json.dumps(
            {
                "primary": 1,
                "min_decryption_version": 1,
                "keys": {"1": base64.b64encode(os.urandom(32)).decode()},
            }
        )
        async with serve_asgi(fake.app, on_shutdown=fake.release_hung) as fake_url:
            settings = Settings(
                environment="test",
                database_url=url,
                jwt_secret=SecretStr("bench-" + uuid.uuid4().hex),
                keyring_json=SecretStr(keyring),
                background_tasks=False,
                auto_migrate_setting=False,
                log_level="WARNING",
                alpaca_trading_url=fake_url,
                alpaca_data_url=fake_url,
                # The paper-first gate is policy: off, so the bench user may trade live at
                # once without first completing paper round trips.
                paper_first_cycles=0,
            )
            app = create_app(settings)
            async with app.router.lifespan_context(app), serve_asgi(app) as gateway_url:
                assert settings.jwt_secret is not None
                token = issue_dev_token(settings.jwt_secret, "bench-user")
                auth = {"Authorization": f"Bearer {token}"}
                async with (
                    httpx.AsyncClient(base_url=gateway_url, timeout=30) as gw,
                    httpx.AsyncClient(base_url=fake_url, timeout=30) as direct,
                ):
                    created = await gw.post(
                        "/v1/connections",
                        headers=auth,
                        json={
                            "broker": "alpaca",
                            "credentials": {
                                "api_key_id": account.key_id,
                                "api_secret_key": account.secret,
                            },
                        },
                    )
                    created.raise_for_status()
                    account_id = created.json()["accounts"][0]
                    keys = {
                        "APCA-API-KEY-ID": account.key_id,
                        "APCA-API-SECRET-KEY": account.secret,
                    }
                    # Warm up both paths (connections, the asset cache), unmeasured.
                    for n in range(5):
                        await gw.post(
                            f"/v1/accounts/{account_id}/orders",
                            json=order_body(n),
                            headers={**auth, "Idempotency-Key": f"warm-{n}"},
                        )
                    # The same order on the paper broker: the order path without any broker.
                    paper = await gw.post(
                        "/v1/connections", headers=auth, json={"broker": "paper", "options": {}}
                    )
                    paper.raise_for_status()
                    paper_account = paper.json()["accounts"][0]
                    on_paper: list[float] = []
                    for n in range(orders):
                        started = time.perf_counter()
                        answer = await gw.post(
                            f"/v1/accounts/{paper_account}/orders",
                            json=order_body(n),
                            headers={**auth, "Idempotency-Key": f"paper-{n}"},
                        )
                        on_paper.append((time.perf_counter() - started) * 1000)
                        assert answer.status_code == 201, answer.text
                    fake.faults.latency = latency_ms / 1000
                    via_gateway: list[float] = []
                    straight: list[float] = []
                    for n in range(orders):
                        started = time.perf_counter()
                        answer = await gw.post(
                            f"/v1/accounts/{account_id}/orders",
                            json=order_body(n),
                            headers={**auth, "Idempotency-Key": f"bench-{n}"},
                        )
                        via_gateway.append((time.perf_counter() - started) * 1000)
                        assert answer.status_code == 201, answer.text
                        body = {
                            "symbol": "AAPL",
                            "qty": "1",
                            "side": "buy",
                            "type": "limit",
                            "limit_price": "1.00",
                            "time_in_force": "gtc",
                            "client_order_id": f"direct-{n}-{uuid.uuid4().hex[:8]}",
                        }
                        started = time.perf_counter()
                        answer = await direct.post("/v2/orders", json=body, headers=keys)
                        straight.append((time.perf_counter() - started) * 1000)
                        assert answer.status_code == 200, answer.text
    overhead = [g - d for g, d in zip(via_gateway, straight, strict=True)]
    store = "Postgres" if kind == "postgres" else "SQLite"
    print(f"orders: {orders} each way, fake latency {latency_ms:g} ms, {store}, one client")
    rows = (
        ("gateway", via_gateway),
        ("direct", straight),
        ("overhead", overhead),
        ("paper", on_paper),
    )
    for name, values in rows:
        print(
            f"{name:9s} p50 {percentile(values, 0.5):7.2f} ms   "
            f"p99 {percentile(values, 0.99):7.2f} ms   mean {statistics.fmean(values):7.2f} ms"
        )
    print("overhead = gateway - direct per interleaved pair; target p50 <= 5 ms, p99 <= 20 ms")
    print("paper = the same order through the gateway to the paper broker (no broker call)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    # Alpaca allows 200 requests/min per key, and the gateway's limiter lets a burst of that
    # size through before it queues: more orders than that measure the queue (by design),
    # not the gateway's own work. 150 orders plus the warm-up and set-up stay inside it.
    parser.add_argument("--orders", type=int, default=150)
    parser.add_argument("--latency-ms", type=float, default=20.0)
    parser.add_argument("--database", choices=("postgres", "sqlite"), default="postgres")
    args = parser.parse_args()
    asyncio.run(main(args.orders, args.latency_ms, args.database))
