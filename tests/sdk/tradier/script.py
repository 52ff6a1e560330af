"""lumiwealth-tradier (PyPI, pinned in requirements.txt) against the fake Tradier.

Run by tests/sdk/test_tradier.py under the SDK's own interpreter: every call the SDK makes
for accounts, balances, positions, history, quotes and orders (place, get, list, modify,
cancel; equity, short sale, option and multileg), each call's result or error printed as one
JSON object on the last line. It never imports the gateway. The SDK knows only Tradier's two
hosts (``TradierApiBase.base_url``), so that one method is pointed at the fake.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from typing import Any

import pandas as pd
from lumiwealth_tradier import Tradier
from lumiwealth_tradier.base import TradierApiBase
from lumiwealth_tradier.orders import OrderLeg

URL = os.environ["TRADIER_URL"]
TradierApiBase.base_url = lambda self: URL  # type: ignore[method-assign]

results: dict[str, dict[str, Any]] = {}


def plain(value: Any) -> Any:
    if isinstance(value, pd.DataFrame):
        return json.loads(value.reset_index().to_json(orient="records", date_format="iso"))
    return json.loads(json.dumps(value, default=str))


def call(name: str, fn: Callable[[], Any]) -> Any:
    try:
        value = fn()
    except Exception as exc:  # every outcome is reported, not raised
        results[name] = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
        return None
    results[name] = {"ok": True, "value": plain(value)}
    return value


def main() -> None:
    account = os.environ["TRADIER_ACCOUNT"]
    tradier = Tradier(account, os.environ["TRADIER_TOKEN"], is_paper=True)
    orders = tradier.orders

    call("profile", tradier.account.get_user_profile)
    call("balances", tradier.account.get_account_balance)
    call("positions", tradier.account.get_positions)
    call("history", lambda: tradier.account.get_history(limit=50))
    call("gainloss", tradier.account.get_gainloss)
    call("quotes", lambda: tradier.market.get_quotes(["AAPL", "MSFT"]))

    placed = call(
        "place_limit",
        lambda: orders.order(
            symbol="AAPL",
            side="buy",
            quantity=2,
            order_type="limit",
            limit_price=1.0,
            tag="sdk-limit-1",
        ),
    )
    order_id = placed["id"] if placed else 0
    call("get_order", lambda: orders.get_order(order_id))
    call("list_orders", orders.get_orders)
    call("modify", lambda: orders.modify(order_id, limit_price=1.05))
    call("get_modified", lambda: orders.get_order(order_id))
    call("cancel", lambda: orders.cancel(order_id))
    call("get_canceled", lambda: orders.get_order(order_id))
    # A finished order: Tradier answers 400 in plain text, which the SDK turns into "ok".
    call("cancel_again", lambda: orders.cancel(order_id))
    call("cancel_filled", lambda: orders.cancel(int(os.environ["TRADIER_FILLED_ORDER"])))
    call("cancel_not_ours", lambda: orders.cancel(int(os.environ["TRADIER_FOREIGN_ORDER"])))
    call(
        "place_bad_side",
        lambda: orders.order(symbol="AAPL", side="buy_to_open", quantity=1, order_type="market"),
    )

    short = call(
        "place_short",
        lambda: orders.order(
            symbol="MSFT",
            side="sell_short",
            quantity=1,
            order_type="limit",
            limit_price=99999.0,
            tag="sdk-short-1",
        ),
    )
    call("get_short", lambda: orders.get_order(short["id"] if short else 0))
    call("cancel_short", lambda: orders.cancel(short["id"] if short else 0))

    underlying = os.environ["TRADIER_UNDERLYING"]
    first, second = os.environ["TRADIER_OPTIONS"].split(",")
    option = call(
        "place_option",
        lambda: orders.order_option(
            asset_symbol=underlying,
            option_symbol=first,
            side="buy_to_open",
            quantity=1,
            order_type="limit",
            limit_price=0.01,
            tag="sdk-option-1",
        ),
    )
    call("get_option", lambda: orders.get_order(option["id"] if option else 0))
    call("cancel_option", lambda: orders.cancel(option["id"] if option else 0))
    spread = call(
        "place_multileg",
        lambda: orders.multileg_order(
            symbol=underlying,
            order_type="debit",
            duration="day",
            price=0.01,
            legs=[
                OrderLeg(option_symbol=first, side="buy_to_open", quantity=1),
                OrderLeg(option_symbol=second, side="sell_to_open", quantity=1),
            ],
            tag="sdk-spread-1",
        ),
    )
    call("get_multileg", lambda: orders.get_order(spread["id"] if spread else 0))
    call("cancel_multileg", lambda: orders.cancel(spread["id"] if spread else 0))
    print(json.dumps(results, default=str))  # noqa: T201


if __name__ == "__main__":
    main()
