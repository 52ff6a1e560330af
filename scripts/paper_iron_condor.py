"""Driver for scripts/paper-iron-condor (see that file). Not a test: it prints what it did."""

from __future__ import annotations

import asyncio
import sys
import tempfile
import uuid
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from app.db.migrate import upgrade  # noqa: E402
from app.main import create_app  # noqa: E402
from app.paper.clock import SystemClock  # noqa: E402
from app.security.jwt import issue_dev_token  # noqa: E402
from tests.harness import settings_for_tests  # noqa: E402


def say(line: str) -> None:
    sys.stdout.write(line + "\n")


async def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite+aiosqlite:///{tmp}/condor.db"
        await asyncio.to_thread(upgrade, url)
        settings = settings_for_tests(url)
        app = create_app(settings, paper_clock=SystemClock())
        assert settings.jwt_secret is not None
        token = issue_dev_token(settings.jwt_secret, "condor-user")
        async with (
            app.router.lifespan_context(app),
            httpx.AsyncClient(
                transport=httpx.ASGITransport(app=app),
                base_url="http://gateway.local",
                headers={"Authorization": f"Bearer {token}"},
            ) as client,
        ):
            await run(client)


async def get(client: httpx.AsyncClient, path: str) -> Any:
    response = await client.get(path)
    response.raise_for_status()
    return response.json()


async def run(client: httpx.AsyncClient) -> None:
    created = await client.post(
        "/v1/connections", json={"broker": "paper", "options": {"starting_cash": "100000"}}
    )
    created.raise_for_status()
    account = created.json()["accounts"][0]
    base = f"/v1/accounts/{account}"
    today = datetime.now(UTC).date().isoformat()
    expirations = await get(client, f"{base}/options/expirations?underlying=AAPL")
    expiration = next(
        e["expiration"]
        for e in expirations["items"]
        if e["expiration_type"] == "standard" and e["expiration"] > today
    )
    chain = await get(
        client,
        f"{base}/options/chain?underlying=AAPL&expiration={expiration}"
        "&strike_gte=170&strike_lte=210&limit=500",
    )
    by_key = {(c["contract"]["right"], Decimal(c["contract"]["strike"])): c for c in chain["items"]}
    wings = [("put", 170, "buy"), ("put", 180, "sell"), ("call", 200, "sell"), ("call", 210, "buy")]
    body = {
        "legs": [
            {
                "symbol": by_key[(right, Decimal(strike))]["symbol"],
                "side": side,
                "ratio": 1,
                "position_effect": "open",
            }
            for right, strike, side in wings
        ],
        "quantity": "1",
        "order_type": "limit",
        "limit_price": "0.05",
        "price_effect": "credit",
        "time_in_force": "day",
    }
    say(f"AAPL {expiration} iron condor, 1 unit, limit 0.05 credit")
    preview = await client.post(f"{base}/orders/preview", json=body)
    preview.raise_for_status()
    p = preview.json()
    say(
        f"preview ({p['source']}): cash {p['estimated_cash_change']} ({p['direction']}), "
        f"buying power {p['buying_power_change']}, fees {p['fees']}"
    )
    placed = await client.post(
        f"{base}/orders", json=body, headers={"Idempotency-Key": uuid.uuid4().hex}
    )
    placed.raise_for_status()
    order = placed.json()
    say(
        f"order {order['id']}: {order['status']}, {order['filled_quantity']} x {order['symbol']}"
        f" ({order['price_effect']})"
    )
    for leg in order["legs"]:
        say(
            f"  leg {leg['side']:4} {leg['position_effect']:5} {leg['symbol']:22} ratio "
            f"{leg['ratio']}  filled {leg['filled_quantity']} at {leg['avg_fill_price']}"
        )
    positions = await get(client, f"{base}/positions")
    say("positions:")
    for pos in positions["items"]:
        c = pos["contract"]
        say(
            f"  {pos['symbol']:22} {pos['quantity']:>3} {c['right']:4} {c['strike']:>5}"
            f"  price {pos['current_price']}  market value {pos['market_value']}"
        )


if __name__ == "__main__":
    asyncio.run(main())
