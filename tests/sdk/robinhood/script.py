"""hood (the Robinhood Crypto Trading API client on PyPI) against the fake Robinhood: run by
tests/sdk/test_robinhood.py under the SDK's own interpreter (it must not import ``app`` or
``tests``). hood signs each request itself (Ed25519 over api key, timestamp, path, method
and body) and takes its base URL as a setting, so it talks to the fake unchanged. Prints one
JSON object on its last line: each call's result or error.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import os
import time
import traceback
import uuid
from collections.abc import Callable
from decimal import Decimal
from typing import Any

from hood.crypto_trading import CryptoTradingClient, auth

BASE_URL = os.environ["ROBINHOOD_URL"].rstrip("/") + "/"
API_KEY = os.environ["ROBINHOOD_KEY"]
SEED = base64.b64decode(os.environ["ROBINHOOD_PRIVATE_KEY"])

results: dict[str, dict[str, Any]] = {}


def call(name: str, fn: Callable[[], Any], expect_status: int | None = None) -> Any:
    """One SDK call; hood returns an APIResponse (data, response, error) and never raises
    for an HTTP error, so the status is checked here."""
    try:
        answer = fn()
    except Exception as exc:  # every failure is reported
        results[name] = {"ok": False, "error": repr(exc), "trace": traceback.format_exc()[-800:]}
        return None
    status = answer.response.status_code if answer.response is not None else None
    data = dataclasses.asdict(answer.data) if dataclasses.is_dataclass(answer.data) else None
    wanted = expect_status if expect_status is not None else status
    ok = answer.error is None and status is not None and status == wanted
    if expect_status is None:
        ok = ok and status < 400
    results[name] = {"ok": ok, "status": status, "value": data}
    if not ok:
        body = answer.response.text[:300] if answer.response is not None else ""
        results[name]["error"] = f"{answer.error!r} {body}"
    return answer.data


client = CryptoTradingClient(auth.Credential(API_KEY, SEED), base_url=BASE_URL)

call("accounts", client.accounts)
call("trading_pairs", lambda: client.trading_pairs("BTC-USD"))
book = call("best_bid_ask", lambda: client.best_bid_ask("BTC-USD"))
ask = Decimal(str(book.results[0].ask_inclusive_of_buy_spread)) if book else Decimal(1)
call("estimated_price", lambda: client.estimated_price("BTC-USD", "both", "0.1", "1"))
call("holdings_empty", client.holdings)

bought = call(
    "order_market_asset_quantity",
    lambda: client.order(
        "BTC-USD",
        side="buy",
        type="market",
        asset_quantity=0.0001,
        client_order_id=str(uuid.uuid4()),
    ),
)
by_amount = call(
    "order_limit_quote_amount",
    lambda: client.order(
        "BTC-USD",
        side="buy",
        type="limit",
        quote_amount=50,
        limit_price=float((ask * 2).quantize(Decimal("0.01"))),
        client_order_id=str(uuid.uuid4()),
    ),
)
resting = call(
    "order_limit_resting",
    lambda: client.order(
        "BTC-USD",
        side="buy",
        type="limit",
        asset_quantity=0.001,
        limit_price=1.0,
        client_order_id=str(uuid.uuid4()),
    ),
)

# The test process fills marketable orders (as the fake-brokers ticker would): wait for it.
deadline = time.monotonic() + 10
filled: Any = None
while time.monotonic() < deadline and by_amount is not None:
    found = client.orders(id=by_amount.id)
    if found.data and found.data.results and found.data.results[0].state == "filled":
        filled = found
        break
    time.sleep(0.2)
results["get_order_quote_amount_filled"] = {
    "ok": filled is not None,
    "value": dataclasses.asdict(filled.data.results[0]) if filled else None,
}
call("get_order_market", lambda: client.orders(id=bought.id if bought else "none"))
call("list_orders_open", lambda: client.orders(state="open"))
call("list_orders_all", lambda: client.orders(symbol="BTC-USD", limit=10))
call("holdings_btc", lambda: client.holdings("BTC"))
call("cancel", lambda: client.cancel(resting.id if resting else "none"))
call("get_order_canceled", lambda: client.orders(id=resting.id if resting else "none"))
call("cancel_again", lambda: client.cancel(resting.id if resting else "none"), expect_status=400)
call(
    "order_market_quote_amount_refused_by_sdk",
    lambda: client.order("BTC-USD", side="buy", type="market", quote_amount=10),
)
refused = results["order_market_quote_amount_refused_by_sdk"]
refused["ok"] = "Cannot specify quote amount for market orders" in refused.get("error", "")

print(json.dumps(results, default=str))  # noqa: T201 - the one line the test reads
