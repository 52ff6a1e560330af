"""Drive the fake Webull with Webull's own Python SDK (webull-openapi-python-sdk 3.0.4).

Run by tests/sdk/test_webull.py under the SDK's own interpreter; it must not import the
gateway. Every call's HTTP status and JSON answer (or the SDK's error) is collected; the last
line printed is one JSON object of them all.

Environment: WEBULL_HOST, WEBULL_PORT (the fake), WEBULL_APP_KEY, WEBULL_APP_SECRET,
WEBULL_ACCOUNT_ID, WEBULL_CRYPTO_ACCOUNT_ID, WEBULL_WORKDIR (logs and the SDK's token file
go there), and the option contracts to trade: WEBULL_OPTION_EXPIRY (yyyy-MM-dd),
WEBULL_OPTION_LOW, WEBULL_OPTION_HIGH (strikes), WEBULL_OPTION_SYMBOL (the OCC symbol of the
low call).
"""

from __future__ import annotations

import json
import logging
import os
import sys
import uuid
from typing import Any

from webull.core.client import ApiClient
from webull.core.http import protocol_type
from webull.core.http.initializer.token.token_operation import TokenOperation
from webull.core.request import set_default_protocol_type
from webull.data.data_client import DataClient
from webull.trade.trade_client import TradeClient

env = os.environ
os.chdir(env["WEBULL_WORKDIR"])  # the SDK writes its log and token files to the cwd
results: dict[str, Any] = {}


def record(name: str, call: Any) -> Any:
    try:
        response = call()
    except Exception as exc:
        results[name] = {
            "error": type(exc).__name__,
            "error_code": getattr(exc, "error_code", None),
            "http_status": getattr(exc, "http_status", None),
            "message": str(getattr(exc, "error_msg", exc))[:200],
        }
        return None
    try:
        body = response.json()
    except ValueError:
        body = response.text
    results[name] = {"status": response.status_code, "body": body}
    return body


def main() -> None:
    set_default_protocol_type(protocol_type.HTTP)  # the fake is plain HTTP on localhost
    client = ApiClient(
        env["WEBULL_APP_KEY"],
        env["WEBULL_APP_SECRET"],
        "us",
        port=int(env["WEBULL_PORT"]),
        token_check_duration_seconds=60,
        token_check_interval_seconds=1,
    )
    client.add_endpoint("us", env["WEBULL_HOST"])
    client.set_token_dir(env["WEBULL_WORKDIR"])
    client.set_stream_logger(stream=sys.stderr, log_level=logging.WARNING)
    account = env["WEBULL_ACCOUNT_ID"]

    # Building the client asks GET /openapi/config, creates a token and waits for its
    # confirmation in the app (the test confirms it on the fake).
    trade = None
    try:
        trade = TradeClient(client)
        results["client_init"] = {"status": 200, "token_set": bool(client.get_token())}
    except Exception as exc:
        results["client_init"] = {"error": type(exc).__name__, "message": str(exc)[:200]}
        sys.stdout.write(json.dumps(results) + "\n")
        return

    record("account_list", lambda: trade.account_v2.get_account_list())
    record("balance", lambda: trade.account_v2.get_account_balance(account))
    record("positions", lambda: trade.account_v2.get_account_position(account))

    equity_id = uuid.uuid4().hex
    equity = [
        {
            "combo_type": "NORMAL",
            "client_order_id": equity_id,
            "symbol": "AAPL",
            "instrument_type": "EQUITY",
            "market": "US",
            "order_type": "LIMIT",
            "limit_price": "1.00",
            "quantity": "1",
            "support_trading_session": "CORE",
            "side": "BUY",
            "time_in_force": "DAY",
            "entrust_type": "QTY",
        }
    ]
    record("preview_order", lambda: trade.order_v3.preview_order(account, equity))
    record("place_order", lambda: trade.order_v3.place_order(account, equity))
    record("order_detail", lambda: trade.order_v3.get_order_detail(account, equity_id))
    replace = [{"client_order_id": equity_id, "quantity": "2", "limit_price": "1.10"}]
    record("replace_order", lambda: trade.order_v3.replace_order(account, replace))
    record("order_detail_replaced", lambda: trade.order_v3.get_order_detail(account, equity_id))
    record("open_orders", lambda: trade.order_v3.get_order_open(account_id=account))
    record("order_history", lambda: trade.order_v3.get_order_history(account))
    record("cancel_order", lambda: trade.order_v3.cancel_order(account, equity_id))
    record("order_detail_unknown", lambda: trade.order_v3.get_order_detail(account, "0" * 32))

    leg = {
        "symbol": "AAPL",
        "option_expire_date": env["WEBULL_OPTION_EXPIRY"],
        "instrument_type": "OPTION",
        "option_type": "CALL",
        "market": "US",
    }
    single_id = uuid.uuid4().hex
    single = [
        {
            "client_order_id": single_id,
            "combo_type": "NORMAL",
            "order_type": "LIMIT",
            "quantity": "1",
            "limit_price": "0.05",
            "option_strategy": "SINGLE",
            "side": "BUY",
            "time_in_force": "GTC",
            "entrust_type": "QTY",
            "position_intent": "BUY_TO_OPEN",
            "legs": [
                {**leg, "side": "BUY", "quantity": "1", "strike_price": env["WEBULL_OPTION_LOW"]}
            ],
        }
    ]
    record("option_preview", lambda: trade.order_v3.preview_order(account, single))
    record("option_place", lambda: trade.order_v3.place_order(account, single))
    detail = record("option_detail", lambda: trade.order_v3.get_order_detail(account, single_id))
    leg_id = ((detail or {}).get("orders") or [{}])[0].get("legs", [{}])[0].get("id")
    option_replace = [
        {
            "client_order_id": single_id,
            "quantity": "2",
            "limit_price": "0.06",
            "legs": [{"id": leg_id, "quantity": "2"}],
        }
    ]
    record("option_replace", lambda: trade.order_v3.replace_order(account, option_replace))
    record("option_cancel", lambda: trade.order_v3.cancel_order(account, single_id))

    vertical_id = uuid.uuid4().hex
    vertical = [
        {
            "client_order_id": vertical_id,
            "combo_type": "NORMAL",
            "order_type": "LIMIT",
            "quantity": "1",
            "limit_price": "0.05",
            "option_strategy": "VERTICAL",
            "side": "BUY",
            "time_in_force": "DAY",
            "entrust_type": "QTY",
            "legs": [
                {**leg, "side": "BUY", "quantity": "1", "strike_price": env["WEBULL_OPTION_LOW"]},
                {**leg, "side": "SELL", "quantity": "1", "strike_price": env["WEBULL_OPTION_HIGH"]},
            ],
        }
    ]
    record("vertical_place", lambda: trade.order_v3.place_order(account, vertical))
    record("vertical_detail", lambda: trade.order_v3.get_order_detail(account, vertical_id))
    # The older generation, still shipped (deprecated OrderOperationV2).
    record("v2_cancel_option", lambda: trade.order_v2.cancel_option(account, vertical_id))

    # Dollar-amount (fractional) stock order: entrust_type AMOUNT with total_cash_amount.
    amount_id = uuid.uuid4().hex
    amount = [
        {
            "combo_type": "NORMAL",
            "client_order_id": amount_id,
            "symbol": "AAPL",
            "instrument_type": "EQUITY",
            "market": "US",
            "order_type": "MARKET",
            "total_cash_amount": "100",
            "support_trading_session": "CORE",
            "side": "BUY",
            "time_in_force": "DAY",
            "entrust_type": "AMOUNT",
        }
    ]
    record("amount_place", lambda: trade.order_v3.place_order(account, amount))
    record("amount_detail", lambda: trade.order_v3.get_order_detail(account, amount_id))

    # Crypto in the crypto account (the 3.x sample's crypto order).
    crypto_account = env["WEBULL_CRYPTO_ACCOUNT_ID"]
    crypto_id = uuid.uuid4().hex
    crypto = [
        {
            "combo_type": "NORMAL",
            "client_order_id": crypto_id,
            "symbol": "BTCUSD",
            "instrument_type": "CRYPTO",
            "market": "US",
            "order_type": "LIMIT",
            "limit_price": "1000",
            "quantity": "0.003",
            "side": "BUY",
            "time_in_force": "DAY",
            "entrust_type": "QTY",
        }
    ]
    record("crypto_place", lambda: trade.order_v3.place_order(crypto_account, crypto))
    record("crypto_cancel", lambda: trade.order_v3.cancel_order(crypto_account, crypto_id))

    token = client.get_token()
    record("token_refresh", lambda: TokenOperation(client).refresh_token(token))

    data = DataClient(client)
    record("stock_snapshot", lambda: data.market_data.get_snapshot("AAPL,MSFT", "US_STOCK"))
    record(
        "option_snapshot",
        lambda: data.option_market_data.get_option_snapshot(
            env["WEBULL_OPTION_SYMBOL"], "US_OPTION"
        ),
    )
    record(
        "crypto_snapshot",
        lambda: data.crypto_market_data.get_crypto_snapshot("BTCUSD"),
    )
    sys.stdout.write(json.dumps(results, default=str) + "\n")


if __name__ == "__main__":
    main()
