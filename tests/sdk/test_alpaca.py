"""alpaca-py (pinned in tests/sdk/alpaca/requirements.txt) against the fake Alpaca.

The fake runs in-process on a real localhost port; the SDK's own TradingClient and
TradingStream run in their own interpreter (``tests/sdk/alpaca/script.py``) while this
process fills orders (``match``) as the ticker of ``scripts/fake-brokers`` would. Every call
the script makes must succeed, or fail exactly as the real API documents (an exercise without
a position is 403; an unknown asset 404).
"""

from __future__ import annotations

import asyncio
import contextlib

from app.brokers.base import OptionRight
from tests.brokers.alpaca.options import contract
from tests.brokers.alpaca.support import running_fake
from tests.sdk.environments import run_sdk_script

CALLS = {
    "get_account",
    "get_account_configurations",
    "get_clock",
    "get_asset",
    "submit_order_qty",
    "get_order_by_id_filled",
    "submit_order_notional",
    "get_notional_filled",
    "submit_order_crypto",
    "get_crypto_filled",
    "submit_order_limit",
    "get_order_by_client_id",
    "get_orders_filtered",
    "get_orders_open",
    "replace_order_by_id",
    "cancel_order_by_id",
    "get_canceled_order",
    "get_all_positions",
    "get_open_position",
    "get_open_position_crypto",
    "close_position_qty",
    "submit_order_resting_for_cancel_all",
    "cancel_orders",
    "exercise_without_position",
    "close_all_positions",
    "get_asset_unknown",
    "trade_updates_stream",
}


async def test_alpaca_py_against_the_fake() -> None:
    async with running_fake(cash="1000000") as run:
        option = contract(run.fake, OptionRight.call, 1).symbol

        async def ticker() -> None:
            while True:
                await run.fake.match()
                await asyncio.sleep(0.1)

        ticking = asyncio.create_task(ticker())
        try:
            results = await asyncio.to_thread(
                run_sdk_script,
                "alpaca",
                "script.py",
                {
                    "ALPACA_URL": run.url,
                    "ALPACA_KEY": run.account.key_id,
                    "ALPACA_SECRET": run.account.secret,
                    "OPTION_SYMBOL": option,
                },
            )
        finally:
            ticking.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await ticking
    failed = {name: r for name, r in results.items() if not r["ok"]}
    assert not failed, failed
    assert set(results) == CALLS
    notional = results["get_notional_filled"]["value"]
    assert notional["qty"] is None
    assert float(notional["notional"]) == 500
    assert float(notional["filled_qty"]) > 0
    assert results["submit_order_crypto"]["value"]["symbol"] == "BTC/USD"
    assert results["get_orders_filtered"]["value"]
    assert {o["symbol"] for o in results["get_orders_filtered"]["value"]} == {"AAPL"}
    replaced = results["replace_order_by_id"]["value"]
    assert replaced["replaces"] == results["submit_order_limit"]["value"]["id"]
    print(f"alpaca-py: {len(results)} calls exercised, {len(results) - len(failed)} passing")  # noqa: T201
