"""coinbase-advanced-py (pinned in tests/sdk/coinbase/requirements.txt) against the fake.

The fake runs in-process on a real localhost port; the SDK's RESTClient and WSClient run in
their own interpreter (``tests/sdk/coinbase/script.py``), signing their own JWTs with a CDP
key pair the fake registered. Every call must succeed, or fail exactly as the real API does
(an unknown order id is a 404 in Coinbase's JSON error envelope).
"""

from __future__ import annotations

import asyncio
from decimal import Decimal

from tests.brokers.coinbase.support import running_fake
from tests.sdk.environments import run_sdk_script

CALLS = {
    "get_accounts",
    "get_account",
    "get_portfolios",
    "get_portfolio_breakdown",
    "get_best_bid_ask",
    "get_product",
    "preview_market_order_buy_quote_size",
    "preview_limit_order_gtc_buy",
    "ws_open",
    "ws_user_subscribe",
    "market_order_buy_quote_size",
    "get_order_quote_size",
    "market_order_buy_base_size",
    "limit_order_gtc_buy",
    "list_orders_open",
    "list_orders_product",
    "get_fills",
    "preview_edit_order_size",
    "edit_order_price_only",
    "edit_order_size_only",
    "get_order_edited",
    "cancel_orders",
    "get_order_canceled",
    "get_order_unknown",
    "ws_user_updates",
    "ws_close",
}


async def test_coinbase_advanced_py_against_the_fake() -> None:
    async with running_fake(cash="100000") as run:
        results = await asyncio.to_thread(
            run_sdk_script,
            "coinbase",
            "script.py",
            {
                "COINBASE_HOST": run.url.removeprefix("http://"),
                "COINBASE_WS_URL": run.ws_url,
                "COINBASE_KEY": run.user.key_name,
                "COINBASE_SECRET": run.user.private_key,
            },
        )
        assert run.fake.refusals == []  # every JWT the SDK signed was accepted
    failed = {name: r for name, r in results.items() if not r["ok"]}
    assert not failed, failed
    assert set(results) == CALLS
    quoted = results["get_order_quote_size"]["value"]["order"]
    assert quoted["order_configuration"] == {"market_market_ioc": {"quote_size": "10"}}
    assert quoted["status"] == "FILLED"
    assert Decimal(quoted["filled_value"]) <= Decimal(10)
    assert Decimal(quoted["filled_size"]) > 0
    edited = results["get_order_edited"]["value"]["order"]["order_configuration"]
    assert edited["limit_limit_gtc"]["limit_price"] == "1100"
    assert edited["limit_limit_gtc"]["base_size"] == "0.002"
    assert results["get_order_canceled"]["value"]["order"]["status"] == "CANCELLED"
    assert '"error": "NOT_FOUND"' in results["get_order_unknown"]["body"].replace(":", ": ")
    preview = results["preview_market_order_buy_quote_size"]["value"]
    assert (preview["order_total"], preview["errs"]) == ("10", [])
    assert [p["uuid"] for p in results["get_portfolios"]["value"]["portfolios"]] == [
        run.user.portfolio
    ]
    print(f"coinbase-advanced-py: {len(results)} calls exercised, {len(results)} passing")  # noqa: T201
