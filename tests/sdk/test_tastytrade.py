"""tastyware's tastytrade SDK (pinned in tests/sdk/tastytrade/requirements.txt) against the
fake tastytrade. The SDK's pydantic models validate every answer, so a call passes only when
the fake's body carries every field the real one does (the full fee-calculation, the
balances body, ``/customers/me/accounts/{n}``, ``/balances/{currency}``).
"""

from __future__ import annotations

import asyncio
import contextlib

from tests.brokers.tastytrade.support import running_fake
from tests.sdk.environments import run_sdk_script

PASSING = {
    "refresh",
    "account_get_all",
    "account_get",
    "get_balances",
    "get_positions",
    "equity_get",
    "place_order_dry_run",
    "place_order",
    "get_live_orders",
    "get_order",
    "replace_order",
    "delete_order",
    "get_order_history",
    "place_market_order",
    "accounts_listed",
    "place_notional_order",
    "cryptocurrency_get",
    "place_crypto_order",
    "get_positions_after",
    "positions_after",
    "account_streamer",
    "streamed",
}


async def test_tastytrade_sdk_against_the_fake() -> None:
    async with running_fake() as run:

        async def ticker() -> None:
            while True:
                await run.fake.match()
                await asyncio.sleep(0.1)

        ticking = asyncio.create_task(ticker())
        try:
            results = await asyncio.to_thread(
                run_sdk_script,
                "tastytrade",
                "script.py",
                {
                    "TT_URL": run.url,
                    "TT_STREAMER_URL": run.streamer_url,
                    "TT_SECRET": run.customer.client_secret,
                    "TT_REFRESH": run.customer.refresh_token,
                    "TT_ACCOUNT": run.account.number,
                },
            )
        finally:
            ticking.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await ticking
    passing = {name for name, r in results.items() if r["ok"]}
    assert passing == PASSING, {n: r for n, r in results.items() if not r["ok"]}
    assert set(results) == PASSING
    streamed = results["streamed"]["value"]
    assert streamed["order_statuses"][-1] == "Filled"
    assert streamed["balance_account"] == results["accounts_listed"]["number"]
    held = {tuple(p) for p in results["positions_after"]["value"]}
    assert ("BTC/USD", "Cryptocurrency") in held
    assert ("AAPL", "Equity") in held
