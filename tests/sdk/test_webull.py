"""Webull's own Python SDK (webull-openapi-python-sdk 3.0.4) against the fake Webull.

The fake runs in-process on a real localhost port; ``tests/sdk/webull/script.py`` runs under
the SDK's own interpreter (its own virtual environment) and makes the SDK's calls: building
the client (``GET /openapi/config``, token create, the check loop until the user confirms in
the app, which this test does on the fake), accounts, balances, positions, preview, place,
get, replace, the open and historical order lists, cancel, option orders (single-leg with
replace by leg id, a vertical), the older generation's option cancel, an amount order, a
crypto order in the crypto account, token refresh, stock, option and crypto snapshots, and an
unknown order's error envelope.
"""

from __future__ import annotations

import asyncio
import contextlib
import tempfile
from typing import Any
from urllib.parse import urlsplit

from app.brokers.base import OptionContract, OptionRight
from tests.brokers.webull.option_support import contract
from tests.fakes.webull import FakeWebull, serve_asgi
from tests.sdk.environments import run_sdk_script

# Every call the script makes and expects to succeed (HTTP 200), besides the client build.
PASSING = (
    "account_list",
    "balance",
    "positions",
    "preview_order",
    "place_order",
    "order_detail",
    "replace_order",
    "order_detail_replaced",
    "open_orders",
    "order_history",
    "cancel_order",
    "option_preview",
    "option_place",
    "option_detail",
    "option_replace",
    "option_cancel",
    "vertical_place",
    "vertical_detail",
    "v2_cancel_option",
    "amount_place",
    "amount_detail",
    "crypto_place",
    "crypto_cancel",
    "token_refresh",
    "stock_snapshot",
    "option_snapshot",
    "crypto_snapshot",
)


async def confirm_tokens(fake: FakeWebull) -> None:
    """The user confirms each new token in the Webull app, shortly after it is created."""
    while True:
        for token in list(fake.tokens.values()):
            if token.status == "PENDING":
                fake.confirm(token.token)
        await asyncio.sleep(0.2)


async def run(fake: FakeWebull, env: dict[str, str]) -> dict[str, Any]:
    return await asyncio.to_thread(run_sdk_script, "webull", "script.py", env, timeout=240)


async def test_webulls_own_sdk_runs_against_the_fake() -> None:
    fake = FakeWebull()
    app = fake.add_app()
    account = next(iter(app.accounts.values()))
    crypto = fake.add_crypto_account(app)
    low, high = contract(fake, 0), contract(fake, 2)
    assert (low.right, high.right) == (OptionRight.call, OptionRight.call)
    async with serve_asgi(fake.app, on_shutdown=fake.release_hung) as url:
        parts = urlsplit(url)
        confirming = asyncio.create_task(confirm_tokens(fake))
        try:
            with tempfile.TemporaryDirectory() as workdir:
                result = await run(
                    fake,
                    {
                        "WEBULL_HOST": str(parts.hostname),
                        "WEBULL_PORT": str(parts.port),
                        "WEBULL_APP_KEY": app.app_key,
                        "WEBULL_APP_SECRET": app.app_secret,
                        "WEBULL_ACCOUNT_ID": account.account_id,
                        "WEBULL_CRYPTO_ACCOUNT_ID": crypto.account_id,
                        "WEBULL_WORKDIR": workdir,
                        "WEBULL_OPTION_EXPIRY": low.expiration.isoformat(),
                        "WEBULL_OPTION_LOW": str(low.strike),
                        "WEBULL_OPTION_HIGH": str(high.strike),
                        "WEBULL_OPTION_SYMBOL": low.symbol,
                    },
                )
        finally:
            confirming.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await confirming

    assert result["client_init"] == {"status": 200, "token_set": True}
    failing = {
        name: result.get(name) for name in PASSING if result.get(name, {}).get("status") != 200
    }
    assert failing == {}
    # The SDK built its client the current generation's way.
    assert ("GET", "/openapi/config") in fake.requests
    assert ("POST", "/auth/tokens/create") in fake.requests
    assert ("POST", "/auth/tokens/check") in fake.requests

    listed = result["account_list"]["body"]
    assert [a["account_id"] for a in listed] == [account.account_id, crypto.account_id]
    assert result["balance"]["body"]["total_asset_currency"] == "USD"
    placed = result["place_order"]["body"]
    detail = result["order_detail_replaced"]["body"]["orders"][0]
    assert (detail["client_order_id"], detail["total_quantity"], detail["limit_price"]) == (
        placed["client_order_id"],
        "2",
        "1.10",
    )
    assert [c["client_order_id"] for c in result["open_orders"]["body"]].count(
        placed["client_order_id"]
    ) == 1
    assert result["preview_order"]["body"]["estimated_cost"] == "1.00"

    option = result["option_detail"]["body"]["orders"][0]
    assert option["option_strategy"] == "SINGLE"
    assert option["legs"][0]["strike_price"] == str(low.strike)
    spread = result["vertical_detail"]["body"]["orders"][0]
    assert spread["option_strategy"] == "VERTICAL"
    assert [leg["side"] for leg in spread["legs"]] == ["BUY", "SELL"]
    assert result["token_refresh"]["body"]["status"] == "NORMAL"
    [snap] = result["option_snapshot"]["body"]
    assert OptionContract.parse(snap["symbol"]) == low
    assert {s["symbol"] for s in result["stock_snapshot"]["body"]} == {"AAPL", "MSFT"}
    [btc] = result["crypto_snapshot"]["body"]
    assert btc["symbol"] == "BTCUSD"
    amount_item = result["amount_detail"]["body"]["orders"][0]
    assert (amount_item["entrust_type"], amount_item["total_cash_amount"]) == ("AMOUNT", "100")
    assert crypto.orders[result["crypto_place"]["body"]["client_order_id"]].status == "CANCELLED"

    unknown = result["order_detail_unknown"]
    assert (unknown["error"], unknown["http_status"], unknown["error_code"]) == (
        "ServerException",
        404,
        "ORDER_NOT_FOUND",
    )
