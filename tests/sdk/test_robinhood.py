"""hood (pinned in tests/sdk/robinhood/requirements.txt; "Unofficial library for the Robinhood
Crypto Trading API", the client the issue names) against the fake Robinhood.

The fake runs in-process on a real localhost port while this process fills marketable
orders (``match``) as the ticker of ``scripts/fake-brokers`` would; hood signs every request
itself with the fake account's Ed25519 key. Every call must succeed, or fail as the API does.
"""

from __future__ import annotations

import asyncio
import contextlib
from decimal import Decimal

from tests.brokers.robinhood.support import running_fake
from tests.sdk.environments import run_sdk_script

CALLS = {
    "accounts",
    "trading_pairs",
    "best_bid_ask",
    "estimated_price",
    "holdings_empty",
    "order_market_asset_quantity",
    "order_limit_quote_amount",
    "order_limit_resting",
    "get_order_quote_amount_filled",
    "get_order_market",
    "list_orders_open",
    "list_orders_all",
    "holdings_btc",
    "cancel",
    "get_order_canceled",
    "cancel_again",
    "order_market_quote_amount_refused_by_sdk",
}


async def test_hood_against_the_fake() -> None:
    async with running_fake(cash="100000") as rh:

        async def ticker() -> None:
            while True:
                await rh.fake.match()
                await asyncio.sleep(0.1)

        ticking = asyncio.create_task(ticker())
        try:
            results = await asyncio.to_thread(
                run_sdk_script,
                "robinhood",
                "script.py",
                {
                    "ROBINHOOD_URL": rh.url,
                    "ROBINHOOD_KEY": rh.account.api_key,
                    "ROBINHOOD_PRIVATE_KEY": rh.account.private_key_b64,
                },
            )
        finally:
            ticking.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await ticking
    failed = {name: r for name, r in results.items() if not r["ok"]}
    assert not failed, failed
    assert set(results) == CALLS
    assert results["accounts"]["value"]["account_number"] == rh.account.account_number
    sides = [r["side"] for r in results["estimated_price"]["value"]["results"]]
    assert sides == ["bid", "bid", "ask", "ask"]
    filled = results["get_order_quote_amount_filled"]["value"]
    assert Decimal(str(filled["limit_order_config"]["quote_amount"])) == 50
    assert filled["limit_order_config"]["asset_quantity"] is None
    assert Decimal(str(filled["filled_asset_quantity"])) > 0
    assert results["get_order_canceled"]["value"]["results"][0]["state"] == "canceled"
    assert [h["asset_code"] for h in results["holdings_btc"]["value"]["results"]] == ["BTC"]
    print(f"hood: {len(results)} calls exercised, {len(results)} passing")  # noqa: T201
