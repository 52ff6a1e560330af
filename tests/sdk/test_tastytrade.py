"""tastyware's tastytrade SDK (pinned in tests/sdk/tastytrade/requirements.txt) against the
fake tastytrade: the calls that pass today, and the ones the fake still fails (issue 15 item
9: the placement answer lacks ``buying-power-effect`` / ``fee-calculation``, the balances
body is thinner than the SDK's model) named explicitly, so a fix shows up as a change here.
"""

from __future__ import annotations

import asyncio

from tests.brokers.tastytrade.support import running_fake
from tests.sdk.environments import run_sdk_script

PASSING = {
    "refresh",
    "account_get_all",
    "account_get",
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
}


async def test_tastytrade_sdk_against_the_fake() -> None:
    async with running_fake() as run:
        results = await asyncio.to_thread(
            run_sdk_script,
            "tastytrade",
            "script.py",
            {
                "TT_URL": run.url,
                "TT_SECRET": run.customer.client_secret,
                "TT_REFRESH": run.customer.refresh_token,
                "TT_ACCOUNT": run.account.number,
            },
        )
    passing = {name for name, r in results.items() if r["ok"]}
    assert passing == PASSING, results
    # Not yet: GET /accounts/{n}/balances/{currency} (the SDK's get_balances) is missing.
    assert set(results) - passing == {"get_balances"}, results
