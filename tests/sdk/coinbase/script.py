"""coinbase-advanced-py against the fake Coinbase: run by tests/sdk/test_coinbase.py under
the SDK's own interpreter (it must not import ``app`` or ``tests``).

The SDK signs its own ES256 JWT with the CDP key the fake registered (``uri`` claim
"METHOD host/path", as Coinbase checks it). It always speaks ``https://{base_url}``; the one
concession here is a requests transport adapter that sends those requests over plain HTTP
to the local fake (the URL, headers, JWT and body are the SDK's own, untouched). Prints one
JSON object on its last line: each call's result or error.
"""

from __future__ import annotations

import json
import os
import threading
import time
import traceback
import uuid
from collections.abc import Callable
from typing import Any

import requests
from coinbase.rest import RESTClient
from coinbase.websocket import WSClient
from requests.adapters import HTTPAdapter

HOST = os.environ["COINBASE_HOST"]  # 127.0.0.1:port
WS_URL = os.environ["COINBASE_WS_URL"]
KEY = os.environ["COINBASE_KEY"]
SECRET = os.environ["COINBASE_SECRET"]

results: dict[str, dict[str, Any]] = {}


class PlainHttp(HTTPAdapter):
    """Delivers the SDK's https://<fake> requests over http (the fake has no TLS)."""

    def send(self, request: requests.PreparedRequest, *args: Any, **kwargs: Any) -> Any:
        assert request.url is not None
        request.url = "http://" + request.url.removeprefix("https://")
        return super().send(request, *args, **kwargs)


def call(name: str, fn: Callable[[], Any], expect_error: int | None = None) -> Any:
    try:
        value = fn()
    except Exception as exc:  # every failure is reported
        response = getattr(exc, "response", None)
        status = getattr(response, "status_code", None)
        body = getattr(response, "text", "")
        ok = expect_error is not None and status == expect_error
        results[name] = {"ok": ok, "status": status, "body": body[:300], "error": repr(exc)[:300]}
        if not ok:
            results[name]["trace"] = traceback.format_exc()[-800:]
        return None
    plain = value.to_dict() if hasattr(value, "to_dict") else value
    results[name] = {"ok": expect_error is None, "value": plain}
    return value


def cid() -> str:
    return str(uuid.uuid4())


client = RESTClient(api_key=KEY, api_secret=SECRET, base_url=HOST, timeout=10)
client.session.mount(f"https://{HOST}", PlainHttp())

accounts = call("get_accounts", lambda: client.get_accounts(limit=250))
usd = next(a for a in accounts.accounts if a.currency == "USD")
call("get_account", lambda: client.get_account(usd.uuid))
portfolios = call("get_portfolios", lambda: client.get_portfolios())
portfolio = portfolios.portfolios[0].uuid
call("get_portfolio_breakdown", lambda: client.get_portfolio_breakdown(portfolio))
call("get_best_bid_ask", lambda: client.get_best_bid_ask(["BTC-USD"]))
call("get_product", lambda: client.get_product("BTC-USD"))
call(
    "preview_market_order_buy_quote_size",
    lambda: client.preview_market_order_buy("BTC-USD", quote_size="10"),
)
call(
    "preview_limit_order_gtc_buy",
    lambda: client.preview_limit_order_gtc_buy("BTC-USD", base_size="0.001", limit_price="1000"),
)

# The user channel first, so the orders below arrive as updates.
messages: list[dict[str, Any]] = []
arrived = threading.Event()


def on_message(text: str) -> None:
    message = json.loads(text)
    messages.append(message)
    if message.get("channel") == "user":
        for event in message.get("events", []):
            if event.get("type") == "update":
                arrived.set()


ws = WSClient(api_key=KEY, api_secret=SECRET, base_url=WS_URL, on_message=on_message, retry=False)
call("ws_open", ws.open)
call("ws_user_subscribe", lambda: ws.user(["BTC-USD"]))

# The SDK README's first example: a market buy of $10 by quote_size.
quoted = call(
    "market_order_buy_quote_size",
    lambda: client.market_order_buy(client_order_id=cid(), product_id="BTC-USD", quote_size="10"),
)
quoted_id = quoted.success_response["order_id"] if quoted else ""
call("get_order_quote_size", lambda: client.get_order(quoted_id))
call(
    "market_order_buy_base_size",
    lambda: client.market_order_buy(
        client_order_id=cid(), product_id="BTC-USD", base_size="0.0001"
    ),
)
resting = call(
    "limit_order_gtc_buy",
    lambda: client.limit_order_gtc_buy(
        client_order_id=cid(), product_id="BTC-USD", base_size="0.001", limit_price="1000"
    ),
)
resting_id = resting.success_response["order_id"] if resting else ""
call("list_orders_open", lambda: client.list_orders(order_status=["OPEN"]))
call("list_orders_product", lambda: client.list_orders(product_ids=["BTC-USD"], limit=10))
call("get_fills", lambda: client.get_fills(order_ids=[quoted_id]))
call("preview_edit_order_size", lambda: client.preview_edit_order(resting_id, size="0.002"))
call("edit_order_price_only", lambda: client.edit_order(resting_id, price="1100"))
call("edit_order_size_only", lambda: client.edit_order(resting_id, size="0.002"))
call("get_order_edited", lambda: client.get_order(resting_id))
call("cancel_orders", lambda: client.cancel_orders([resting_id]))
call("get_order_canceled", lambda: client.get_order(resting_id))
call("get_order_unknown", lambda: client.get_order(str(uuid.uuid4())), expect_error=404)

deadline = time.monotonic() + 10
while not arrived.is_set() and time.monotonic() < deadline:
    time.sleep(0.1)
user_events = [
    event
    for message in messages
    if message.get("channel") == "user"
    for event in message.get("events", [])
]
results["ws_user_updates"] = {
    "ok": any(e.get("type") == "snapshot" for e in user_events)
    and any(e.get("type") == "update" for e in user_events),
    "value": {
        "types": [e.get("type") for e in user_events],
        "statuses": sorted({o.get("status") for e in user_events for o in e.get("orders", [])}),
    },
}
call("ws_close", ws.close)

print(json.dumps(results, default=str))  # noqa: T201 - the one line the test reads
