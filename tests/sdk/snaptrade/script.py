"""snaptrade-python-sdk against the fake SnapTrade (run under the SDK's own interpreter).

Signs every request with the partner's consumer key as the SDK does; prints one JSON object
(each call's result or error) on its last line.
"""

import json
import os

from snaptrade_client import SnapTrade
from snaptrade_client.auth import SnapTradeAuth

URL = os.environ["SNAPTRADE_URL"]
USER_ID = os.environ["SNAPTRADE_USER_ID"]
USER_SECRET = os.environ["SNAPTRADE_USER_SECRET"]
ACCOUNT = os.environ["SNAPTRADE_ACCOUNT"]

client = SnapTrade(
    host=URL,
    auth=SnapTradeAuth.commercial_api_key(
        consumer_key=os.environ["SNAPTRADE_CONSUMER_KEY"],
        client_id=os.environ["SNAPTRADE_CLIENT_ID"],
    ),
)
user = {"user_id": USER_ID, "user_secret": USER_SECRET}
results = {}


def plain(value):
    return json.loads(json.dumps(value, default=str))


def call(name, fn):
    try:
        response = fn()
        body = getattr(response, "body", response)
        results[name] = {"ok": True, "body": plain(body)}
        return body
    except Exception as exc:  # the SDK's error, reported
        status = getattr(exc, "status", None)
        body = getattr(exc, "body", None)
        results[name] = {
            "ok": False,
            "error": type(exc).__name__,
            "status": status,
            "body": plain(body) if body is not None else None,
            "message": str(exc)[:400],
        }
        return None


call(
    "register_user", lambda: client.authentication.register_snap_trade_user(user_id="sdk-new-user")
)
call("list_accounts", lambda: client.account_information.list_user_accounts(**user))
call(
    "get_account",
    lambda: client.account_information.get_user_account_details(account_id=ACCOUNT, **user),
)
call(
    "balances",
    lambda: client.account_information.get_user_account_balance(account_id=ACCOUNT, **user),
)
call(
    "positions",
    lambda: client.account_information.get_all_account_positions(account_id=ACCOUNT, **user),
)
symbols = call("symbols", lambda: client.reference_data.get_symbols_by_ticker(query="AAPL"))
symbol_id = str(symbols["id"]) if symbols else "?"
impact = call(
    "impact",
    lambda: client.trading.get_order_impact(
        account_id=ACCOUNT,
        action="BUY",
        universal_symbol_id=symbol_id,
        order_type="Limit",
        time_in_force="Day",
        price=1.5,
        units=2.0,
        **user,
    ),
)
trade_id = str(impact["trade"]["id"]) if impact else "?"
placed = call(
    "place_checked",
    lambda: client.trading.place_order(trade_id=trade_id, wait_to_confirm=True, **user),
)
order_id = str(placed["brokerage_order_id"]) if placed else "?"
forced = call(
    "place_without_impact",
    lambda: client.trading.place_force_order(
        account_id=ACCOUNT,
        action="BUY",
        symbol="MSFT",
        order_type="Limit",
        time_in_force="GTC",
        price=2.25,
        units=3.0,
        **user,
    ),
)
forced_id = str(forced["brokerage_order_id"]) if forced else "?"
call(
    "place_notional",
    lambda: client.trading.place_force_order(
        account_id=ACCOUNT,
        action="BUY",
        universal_symbol_id=symbol_id,
        order_type="Market",
        time_in_force="Day",
        notional_value="250",
        **user,
    ),
)
call(
    "get_order",
    lambda: client.account_information.get_user_account_order_detail(
        brokerage_order_id=order_id, account_id=ACCOUNT, **user
    ),
)
call(
    "list_orders",
    lambda: client.account_information.get_user_account_orders(
        account_id=ACCOUNT, state="all", days=30, **user
    ),
)
call(
    "replace",
    lambda: client.trading.replace_order(
        brokerage_order_id=forced_id,
        action="BUY",
        order_type="Limit",
        time_in_force="GTC",
        account_id=ACCOUNT,
        symbol="MSFT",
        price=2.5,
        units=3.0,
        **user,
    ),
)
call(
    "cancel",
    lambda: client.trading.cancel_order(brokerage_order_id=order_id, account_id=ACCOUNT, **user),
)
call(
    "get_canceled",
    lambda: client.account_information.get_user_account_order_detail(
        brokerage_order_id=order_id, account_id=ACCOUNT, **user
    ),
)
call(
    "cancel_unknown",
    lambda: client.trading.cancel_order(
        brokerage_order_id="6f1b9c8e-0000-4000-8000-000000000000", account_id=ACCOUNT, **user
    ),
)
print(json.dumps(results))  # noqa: T201 - the one line the test reads
