"""alpaca-py's own calls against the fake Alpaca (run under the SDK's interpreter).

Reads ALPACA_URL, ALPACA_KEY, ALPACA_SECRET, OPTION_SYMBOL; prints one JSON object on its
last line: for each call, {"ok": true, "value": ...} or {"ok": false, "error": ...}. Imports
nothing of the gateway (another interpreter). The test process fills orders while this runs.
"""

from __future__ import annotations

import json
import os
import threading
import time
from typing import Any

from alpaca.common.exceptions import APIError
from alpaca.trading.client import TradingClient
from alpaca.trading.enums import OrderSide, OrderStatus, QueryOrderStatus, TimeInForce
from alpaca.trading.requests import (
    ClosePositionRequest,
    GetOrdersRequest,
    LimitOrderRequest,
    MarketOrderRequest,
    ReplaceOrderRequest,
)
from alpaca.trading.stream import TradingStream

URL = os.environ["ALPACA_URL"]
KEY = os.environ["ALPACA_KEY"]
SECRET = os.environ["ALPACA_SECRET"]
OPTION = os.environ["OPTION_SYMBOL"]

results: dict[str, Any] = {}


def call(name: str, fn: Any, *, expect_error: int | None = None) -> Any:
    """Run one SDK call; record its (summarised) result or its error."""
    try:
        value = fn()
    except APIError as exc:
        results[name] = {
            "ok": expect_error is not None and exc.status_code == expect_error,
            "error": f"APIError {exc.status_code}: {exc.message}",
        }
        return None
    except Exception as exc:  # every failure is reported, not raised
        results[name] = {"ok": False, "error": f"{type(exc).__name__}: {exc}"[:500]}
        return None
    results[name] = {"ok": expect_error is None, "value": summary(value)}
    return value


def summary(value: Any) -> Any:
    if isinstance(value, list):
        return [summary(v) for v in value]
    if hasattr(value, "model_dump"):
        dumped = value.model_dump(mode="json")
        keep = (
            "id", "symbol", "qty", "notional", "side", "status", "filled_qty",
            "filled_avg_price", "asset_class", "replaces", "is_open", "cash", "event",
            "no_shorting", "fractional_trading", "limit_price", "client_order_id",
        )  # fmt: skip
        return {k: dumped[k] for k in keep if k in dumped}
    return value


def wait_until(client: TradingClient, order_id: Any, status: OrderStatus) -> Any:
    for _ in range(100):
        order = client.get_order_by_id(order_id)
        if order.status == status:
            return order
        time.sleep(0.1)
    raise TimeoutError(f"order {order_id} never reached {status}")


trading = TradingClient(KEY, SECRET, paper=True, url_override=URL)

# The trade_updates stream first, so it sees the orders below.
events: list[dict[str, Any]] = []
stream = TradingStream(KEY, SECRET, paper=True, url_override=URL.replace("http", "ws") + "/stream")


async def on_update(update: Any) -> None:
    event = getattr(update.event, "value", update.event)  # an enum or its string
    events.append({"event": str(event), "order_id": str(update.order.id)})


stream.subscribe_trade_updates(on_update)
streaming = threading.Thread(target=stream.run, daemon=True)
streaming.start()
time.sleep(1.0)

call("get_account", trading.get_account)
call("get_account_configurations", trading.get_account_configurations)
call("get_clock", trading.get_clock)
call("get_asset", lambda: trading.get_asset("AAPL"))

bought = call(
    "submit_order_qty",
    lambda: trading.submit_order(
        MarketOrderRequest(symbol="AAPL", qty=3, side=OrderSide.BUY, time_in_force=TimeInForce.DAY)
    ),
)
if bought is not None:
    call("get_order_by_id_filled", lambda: wait_until(trading, bought.id, OrderStatus.FILLED))
by_dollars = call(
    "submit_order_notional",
    lambda: trading.submit_order(
        MarketOrderRequest(
            symbol="MSFT",
            notional=500,
            side=OrderSide.BUY,
            time_in_force=TimeInForce.DAY,
            client_order_id="sdk-notional-1",
        )
    ),
)
if by_dollars is not None:
    call("get_notional_filled", lambda: wait_until(trading, by_dollars.id, OrderStatus.FILLED))
crypto = call(
    "submit_order_crypto",
    lambda: trading.submit_order(
        MarketOrderRequest(
            symbol="BTC/USD", qty=0.01, side=OrderSide.BUY, time_in_force=TimeInForce.GTC
        )
    ),
)
if crypto is not None:
    call("get_crypto_filled", lambda: wait_until(trading, crypto.id, OrderStatus.FILLED))
resting = call(
    "submit_order_limit",
    lambda: trading.submit_order(
        LimitOrderRequest(
            symbol="AAPL",
            qty=1,
            side=OrderSide.BUY,
            time_in_force=TimeInForce.GTC,
            limit_price=100,
            client_order_id="sdk-limit-1",
        )
    ),
)
call("get_order_by_client_id", lambda: trading.get_order_by_client_id("sdk-notional-1"))
call(
    "get_orders_filtered",
    lambda: trading.get_orders(
        GetOrdersRequest(
            status=QueryOrderStatus.ALL, side=OrderSide.BUY, symbols=["AAPL"], limit=10
        )
    ),
)
call("get_orders_open", lambda: trading.get_orders(GetOrdersRequest(status=QueryOrderStatus.OPEN)))
replaced = None
if resting is not None:
    replaced = call(
        "replace_order_by_id",
        lambda: trading.replace_order_by_id(resting.id, ReplaceOrderRequest(limit_price=101)),
    )
if replaced is not None:
    call("cancel_order_by_id", lambda: trading.cancel_order_by_id(replaced.id))
    call("get_canceled_order", lambda: wait_until(trading, replaced.id, OrderStatus.CANCELED))

call("get_all_positions", trading.get_all_positions)
call("get_open_position", lambda: trading.get_open_position("AAPL"))
call("get_open_position_crypto", lambda: trading.get_open_position("BTCUSD"))
call(
    "close_position_qty",
    lambda: trading.close_position("AAPL", ClosePositionRequest(qty="1")),
)
call(
    "submit_order_resting_for_cancel_all",
    lambda: trading.submit_order(
        LimitOrderRequest(
            symbol="MSFT", qty=1, side=OrderSide.BUY, time_in_force=TimeInForce.DAY, limit_price=1
        )
    ),
)
call("cancel_orders", trading.cancel_orders)
call(
    "exercise_without_position", lambda: trading.exercise_options_position(OPTION), expect_error=403
)
call("close_all_positions", lambda: trading.close_all_positions(cancel_orders=True))
call("get_asset_unknown", lambda: trading.get_asset("NOPE"), expect_error=404)

STREAMED = {"new", "fill", "canceled", "replaced"}
# Until the stream has delivered every kind (bounded; a loaded machine is slow), not a fixed
# second: the orders above were all placed, filled, replaced or canceled by now.
deadline = time.monotonic() + 30
while not STREAMED <= {e["event"] for e in events} and time.monotonic() < deadline:
    time.sleep(0.05)
stream.stop()
streaming.join(timeout=10)
kinds = sorted({e["event"] for e in events})
results["trade_updates_stream"] = {
    "ok": STREAMED <= set(kinds),
    "value": kinds,
}

print(json.dumps(results))  # noqa: T201 - the one line the test reads
