"""ibind, the Python client of IBKR's Client Portal Web API, against the fake gateway.

The fake gateway runs in-process on a real localhost port; ``tests/sdk/ibkr/script.py`` runs
ibind under its own interpreter in plain Client Portal mode (no OAuth, no tickler thread)
and reports every call: the session, accounts, portfolio, the iserver summary, contract
search, a placement through the question/reply chain, the live-order list, modify and cancel.
"""

from __future__ import annotations

import asyncio
import json

from tests.brokers.ibkr.support import FAKE_SLOW_SECONDS, running_fake
from tests.sdk.environments import run_sdk_script

# The SDK calls the script makes, by name (the figure for the closing note).
CALLS = [
    "health",
    "auth_status",
    "tickle",
    "iserver_accounts",
    "portfolio_accounts",
    "positions",
    "portfolio_summary",
    "account_summary",
    "search",
    "snapshot",
    "place",
    "live_orders",
    "live_orders_again",
    "order_status",
    "modify",
    "cancel",
    "live_orders_after",
    "unknown_route",
]
# Calls whose right outcome is ibind's error: the gateway refuses.
REFUSED = {"unknown_route"}


async def test_ibind_drives_the_fake_gateway() -> None:
    async with running_fake(cash="100000") as run:
        number = run.account.account_id
        last = run.fake.quotes.quote("AAPL", run.fake.clock()).last
        result = await asyncio.to_thread(
            run_sdk_script,
            "ibkr",
            "script.py",
            {
                "IBKR_URL": run.url + "/",
                "IBKR_ACCOUNT": number,
                "IBKR_LAST": str(last),
                "IBKR_SLOW_SECONDS": str(FAKE_SLOW_SECONDS * 1.5),
            },
        )
        orders = list(run.fake.orders.values())
        replies = [p for _m, p in run.fake.requests if "/iserver/reply/" in p]
    assert sorted(result) == sorted(CALLS)
    failed = {n: result[n] for n in CALLS if not result[n]["ok"] and n not in REFUSED}
    assert failed == {}, json.dumps(failed, indent=1)[:6000]
    assert "404" in result["unknown_route"]["message"]
    assert number in result["iserver_accounts"]["body"]["accounts"]
    summary = result["account_summary"]["body"]
    assert summary["totalCashValue"] == 100000
    assert summary["cashBalances"][0]["currency"] == "USD"
    assert result["portfolio_summary"]["body"]["totalcashvalue"]["amount"] == 100000
    assert result["place"]["body"]["order_status"] in ("Submitted", "PreSubmitted")
    listed = result["live_orders_again"]["body"]["orders"]
    assert [str(o["orderId"]) for o in listed] == [result["place"]["body"]["order_id"]]
    assert len(replies) == 2  # the price-constraint question, on the place and the modify
    [order] = orders
    assert order.status == "Cancelled"
