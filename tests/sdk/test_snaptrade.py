"""snaptrade-python-sdk, SnapTrade's own client, against the fake SnapTrade.

The fake runs in-process on a real localhost port with the test partner's keys; the SDK
signs every request with the consumer key (HMAC-SHA256 over path, query and content) and the
fake verifies it as SnapTrade does, so a call that passes proves the signature too.
``tests/sdk/snaptrade/script.py`` runs under the SDK's interpreter and reports every call.
"""

from __future__ import annotations

import asyncio
import json

from tests.brokers.snaptrade.support import running_fake
from tests.sdk.environments import run_sdk_script

# The SDK calls the script makes, by name (the figure for the closing note).
CALLS = [
    "register_user",
    "list_accounts",
    "get_account",
    "balances",
    "positions",
    "symbols",
    "impact",
    "place_checked",
    "place_without_impact",
    "place_notional",
    "get_order",
    "list_orders",
    "replace",
    "cancel",
    "get_canceled",
    "cancel_unknown",
]
# Calls whose right outcome is the SDK's error: the fake refuses as SnapTrade does.
REFUSED = {"cancel_unknown"}


async def test_snaptrade_python_sdk_drives_the_fake() -> None:
    async with running_fake(cash="100000") as run:
        account = run.account
        result = await asyncio.to_thread(
            run_sdk_script,
            "snaptrade",
            "script.py",
            {
                "SNAPTRADE_URL": run.url,
                "SNAPTRADE_CLIENT_ID": run.fake.client_id,
                "SNAPTRADE_CONSUMER_KEY": run.fake.consumer_key,
                "SNAPTRADE_USER_ID": run.user.user_id,
                "SNAPTRADE_USER_SECRET": run.user.secret,
                "SNAPTRADE_ACCOUNT": account.id,
            },
        )
        failed = {
            name: result[name] for name in CALLS if not result[name]["ok"] and name not in REFUSED
        }
        assert failed == {}, json.dumps(failed, indent=1)[:6000]
        assert sorted(result) == sorted(CALLS)
        assert run.fake.refused == []  # every signature the SDK made was accepted
        assert result["cancel_unknown"]["status"] == 404
        assert result["cancel_unknown"]["body"]["code"] == "1011"
        assert result["register_user"]["body"]["userId"] == "sdk-new-user"
        [listed] = result["list_accounts"]["body"]
        assert listed["id"] == account.id
        placed = result["place_checked"]["body"]
        assert (placed["status"], placed["total_quantity"]) == ("ACCEPTED", "2.0")
        forced = result["place_without_impact"]["body"]
        assert forced["universal_symbol"]["symbol"] == "MSFT"
        notional = result["place_notional"]["body"]
        assert notional["total_quantity"] is None  # sized by the brokerage when it fills
        assert result["get_canceled"]["body"]["status"] == "CANCELED"
        replaced = result["replace"]["body"]
        assert replaced["brokerage_order_id"] != forced["brokerage_order_id"]
        assert replaced["limit_price"] == "2.5"
        ids = {o["brokerage_order_id"] for o in result["list_orders"]["body"]}
        assert {placed["brokerage_order_id"], forced["brokerage_order_id"]} <= ids
        assert len(account.orders) == 4
