"""lumiwealth-tradier, the Tradier client lumibot trades with, against the fake Tradier.

The fake runs in-process on a real localhost port; ``tests/sdk/tradier/script.py`` runs under
the SDK's own interpreter (``run_sdk_script``) and reports every call. What is asserted here
is what a user of the SDK would see from the real Tradier: the full bodies it parses into
DataFrames, the acknowledgements it returns, and the plain-text answers it matches on (a
cancel of a finished order is "ok" to the SDK only because Tradier answers it in plain text).
"""

from __future__ import annotations

import asyncio

from app.brokers.base import OrderSide
from tests.brokers.support import market
from tests.brokers.tradier.support import running_fake
from tests.sdk.environments import run_sdk_script

# The SDK calls the script makes, by name (the figure for the closing note).
CALLS = [
    "profile",
    "balances",
    "positions",
    "history",
    "gainloss",
    "quotes",
    "place_limit",
    "get_order",
    "list_orders",
    "modify",
    "get_modified",
    "cancel",
    "get_canceled",
    "cancel_again",
    "cancel_filled",
    "cancel_not_ours",
    "place_bad_side",
    "place_short",
    "get_short",
    "cancel_short",
    "place_option",
    "get_option",
    "cancel_option",
    "place_multileg",
    "get_multileg",
    "cancel_multileg",
]
# Calls whose right outcome is the SDK's error: the fake refuses as Tradier does.
REFUSED = {"cancel_not_ours", "place_bad_side"}


async def test_lumiwealth_tradier_drives_the_fake() -> None:
    async with running_fake(cash="100000") as run:
        adapter = run.adapter()
        number = run.account.number
        filled = await adapter.place_order(number, market("sdk-fill-1", qty="3"))
        assert await run.fake.match() == 1
        await adapter.place_order(number, market("sdk-sell-1", OrderSide.sell, qty="1"))
        assert await run.fake.match() == 1
        other = run.fake.add_user()
        foreign = await run.adapter(other).place_order(
            other.account.number, market("sdk-foreign-1", qty="1")
        )
        today = run.fake.clock().date()
        expiration = run.fake.options.expirations("AAPL", today)[1].expiration
        contracts = [
            c for c in run.fake.options.contracts("AAPL", expiration) if c.right.value == "call"
        ]
        middle = len(contracts) // 2
        options = f"{contracts[middle].symbol},{contracts[middle + 1].symbol}"

        result = await asyncio.to_thread(
            run_sdk_script,
            "tradier",
            "script.py",
            {
                "TRADIER_URL": run.url,
                "TRADIER_TOKEN": run.user.token,
                "TRADIER_ACCOUNT": number,
                "TRADIER_FILLED_ORDER": filled.broker_order_id,
                "TRADIER_FOREIGN_ORDER": foreign.broker_order_id,
                "TRADIER_UNDERLYING": "AAPL",
                "TRADIER_OPTIONS": options,
            },
        )

    assert sorted(result) == sorted(CALLS)
    passing = [n for n in CALLS if result[n]["ok"] != (n in REFUSED)]
    assert passing == CALLS, {n: result[n] for n in CALLS if n not in passing}

    [profile] = result["profile"]["value"]
    assert profile["account.account_number"] == number
    [balances] = result["balances"]["value"]
    assert balances["account_type"] == "margin"
    assert {"total_equity", "total_cash", "margin.stock_buying_power"} <= set(balances)
    [position] = result["positions"]["value"]
    assert (position["symbol"], position["quantity"]) == ("AAPL", 2)
    [closed] = result["gainloss"]["value"]
    assert (closed["symbol"], closed["quantity"]) == ("AAPL", 1)
    assert round(closed["proceeds"] - closed["cost"], 2) == closed["gain_loss"]
    assert any(e["type"] == "trade" for e in result["history"]["value"])
    assert {q["symbol"] for q in result["quotes"]["value"]} == {"AAPL", "MSFT"}

    placed = result["place_limit"]["value"]
    assert placed["status"] == "ok"
    assert placed["id"] > 0
    [got] = result["get_order"]["value"]
    assert (got["status"], got["tag"], got["side"]) == ("pending", "sdk-limit-1", "buy")
    assert placed["id"] in {o["id"] for o in result["list_orders"]["value"]}
    assert result["modify"]["value"]["status"] == "ok"
    assert result["get_modified"]["value"][0]["price"] == 1.05
    assert result["cancel"]["value"]["status"] == "ok"
    assert result["get_canceled"]["value"][0]["status"] == "canceled"
    # The SDK turns Tradier's plain-text 400 for a finished order into an "ok".
    assert result["cancel_again"]["value"] == {"id": placed["id"], "status": "ok"}
    assert result["cancel_filled"]["value"]["status"] == "ok"
    assert "401 - Unauthorized Account: " + number in result["cancel_not_ours"]["error"]
    assert "400" in result["place_bad_side"]["error"]

    assert result["get_short"]["value"][0]["side"] == "sell_short"
    [option] = result["get_option"]["value"]
    assert (option["class"], option["option_symbol"]) == ("option", options.split(",")[0])
    [spread] = result["get_multileg"]["value"]
    assert (spread["class"], spread["type"], spread["num_legs"]) == ("multileg", "debit", 2)
