"""schwab-py (pinned in tests/sdk/schwab/requirements.txt) against the fake Schwab.

The fake runs in-process on a real localhost port with a margin account; schwab-py runs in
its own interpreter (``tests/sdk/schwab/script.py``) from a token file holding tokens the
fake issued, while this process fills orders (``match``) as ``scripts/fake-brokers`` does.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import tempfile
import time
from decimal import Decimal
from pathlib import Path

from app.brokers.base import OptionContract, OptionRight
from tests.brokers.schwab.support import CLIENT_ID, CLIENT_SECRET, running_fake
from tests.sdk.environments import run_sdk_script

CALLS = {
    "get_account_numbers",
    "get_accounts",
    "get_account_positions",
    "get_user_preferences",
    "place_equity_limit",
    "get_order",
    "replace_order",
    "cancel_order",
    "get_canceled_order",
    "place_equity_market",
    "place_option_limit",
    "place_sell_short",
    "place_buy_to_cover",
    "get_orders_for_account",
    "get_transactions",
    "get_account_positions_after",
    "account_activity_stream",
}


async def test_schwab_py_against_the_fake() -> None:
    async with running_fake(account_type="MARGIN") as run:
        access, refresh = run.fake.issue_tokens(run.login)
        expiration = run.fake.options.expirations("AAPL", run.fake.today())[2].expiration
        option = OptionContract("AAPL", "AAPL", expiration, OptionRight.call, strike=Decimal("190"))
        ref = run.account.hash_value

        async def ticker() -> None:
            while True:
                await run.fake.match()
                await asyncio.sleep(0.1)

        ticking = asyncio.create_task(ticker())
        try:
            with tempfile.TemporaryDirectory() as workdir:
                token_file = Path(workdir) / "token.json"
                # schwab-py's token file: the token answer plus the SDK's own wrapper
                # (schwab/auth.py TokenMetadata.wrapped_token_write_func).
                now = int(time.time())
                token_file.write_text(
                    json.dumps(
                        {
                            "creation_timestamp": now,
                            "token": {
                                "access_token": access,
                                "refresh_token": refresh,
                                "token_type": "Bearer",
                                "expires_in": 1800,
                                "expires_at": now + 1800,
                                "scope": "api",
                            },
                        }
                    )
                )
                results = await asyncio.to_thread(
                    run_sdk_script,
                    "schwab",
                    "script.py",
                    {
                        "SCHWAB_URL": run.url,
                        "SCHWAB_STREAMER_URL": run.url.replace("http://", "ws://", 1) + "/ws",
                        "SCHWAB_API_KEY": CLIENT_ID,
                        "SCHWAB_APP_SECRET": CLIENT_SECRET,
                        "SCHWAB_TOKEN_FILE": str(token_file),
                        "SCHWAB_ACCOUNT_HASH": ref,
                        "SCHWAB_OPTION_SYMBOL": option.occ_padded,
                    },
                )
        finally:
            ticking.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await ticking
    failed = {n: r for n, r in results.items() if "error" in r or r["status"] >= 400}
    assert not failed, failed
    assert set(results) == CALLS
    # The order-id helper matched the Location literal it expects.
    for name in ("place_equity_limit", "place_option_limit", "replace_order"):
        assert isinstance(results[name]["order_id"], int), results[name]
    [info] = results["get_user_preferences"]["body"]["streamerInfo"]
    assert info["streamerSocketUrl"].startswith("wss://")
    numbers = results["get_account_numbers"]["body"]
    assert [n["hashValue"] for n in numbers] == [ref]
    assert results["get_canceled_order"]["body"]["status"] == "CANCELED"
    option_order = results["get_orders_for_account"]["body"]
    assert any(
        leg["instrument"]["assetType"] == "OPTION"
        for order in option_order
        for leg in order["orderLegCollection"]
    )
    streamed = results["account_activity_stream"]["body"]
    assert streamed["service"] == "ACCT_ACTIVITY"
    assert [url.split("://")[0] for url in streamed["advertised"]] == ["wss"]
    assert streamed["message_types"][0] == "SUBSCRIBED"
    assert "OrderFillCompleted" in streamed["message_types"]
