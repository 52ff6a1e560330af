"""Webull OpenAPI payloads in the shapes the official sources give.

* Requests: the docs' "Simple" stock order (https://developer.webull.com/apis/docs/
  trade-api/trade, ``account_id`` + ``new_orders``).
* Responses: field names of the official Java SDK's response beans, serialized snake_case
  (webull-inc/webull-openapi-java-sdk ``trade/response/v2/Account.java``,
  ``AccountBalanceInfo.java``, ``AccountAssetInfo.java``, ``AccountPositionsInfo.java``,
  ``OrderHistory.java``, ``TradeOrderResponse.java``, ``trade/response/NOrderItem.java``),
  with every amount a string as those beans type them; the token answer's keys from the
  Python SDK (``token``, ``expires``, ``status``; ``token_manager.py``); the error body from
  the SDK's ``_parse_error_info_from_response_body`` (``error_code``, ``message``).
  The values are illustrative, the docs showing none.
"""

from __future__ import annotations

from typing import Any

ACCOUNTS: list[dict[str, Any]] = [
    {
        "user_id": "1000012345",
        "account_id": "HBGQE8NM0CQG4Q34ABOM83HD09",
        "account_number": "5MV12345",
        "account_type": "MARGIN",
        "account_label": "Individual Margin",
        "account_class": "INDIVIDUAL",
    }
]

BALANCE: dict[str, Any] = {
    "total_asset_currency": "USD",
    "total_cash_balance": "10000.50",
    "total_unrealized_profit_loss": "12.34",
    "total_market_value": "1900.00",
    "total_net_liquidation_value": "11900.50",
    "total_day_profit_loss": "1.00",
    "day_trades_left": "3",
    "account_currency_assets": [
        {
            "currency": "USD",
            "cash_balance": "10000.50",
            "market_value": "1900.00",
            "settled_cash": "10000.50",
            "unsettled_cash": "0",
            "buying_power": "20001.00",
            "unrealized_profit_loss": "12.34",
            "net_liquidation_value": "11900.50",
        }
    ],
}

POSITIONS: list[dict[str, Any]] = [
    {
        "position_id": "POS123",
        "currency": "USD",
        "symbol": "AAPL",
        "quantity": "10",
        "available_quantity": "10",
        "cost_price": "188.7660",
        "last_price": "190.00",
        "unrealized_profit_loss": "12.34",
        "unrealized_profit_loss_rate": "0.0065",
        "instrument_id": "913256135",
        "instrument_type": "EQUITY",
        "market_value": "1900.00",
    }
]

ORDER_ITEM: dict[str, Any] = {
    "client_order_id": "0f1e2d3c4b5a69788796a5b4c3d2e1f0",
    "order_id": "2VP8SB9L5K9C5RB1V1ORQ39BQE",
    "symbol": "AAPL",
    "market": "US",
    "side": "BUY",
    "status": "PARTIAL_FILLED",
    "order_type": "LIMIT",
    "instrument_type": "EQUITY",
    "total_quantity": "10",
    "filled_quantity": "4",
    "remain_quantity": "6",
    "limit_price": "188.00",
    "stop_price": None,
    "filled_price": "187.9500",
    "time_in_force": "DAY",
    "support_trading_session": "CORE",
    "entrust_type": "QTY",
    "place_time": "1764161400000",
    "place_time_at": "2025-11-26T12:50:00.000Z",
    "filled_time": "1764161460000",
    "filled_time_at": "2025-11-26T12:51:00.000Z",
}

ORDER: dict[str, Any] = {
    "client_order_id": ORDER_ITEM["client_order_id"],
    "combo_type": "NORMAL",
    "orders": [ORDER_ITEM],
}

PLACED: dict[str, Any] = {
    "client_order_id": ORDER_ITEM["client_order_id"],
    "order_id": ORDER_ITEM["order_id"],
}

SNAPSHOT: list[dict[str, Any]] = [
    {
        "symbol": "AAPL",
        "instrument_id": "913256135",
        "price": "190.00",
        "bid": "189.98",
        "ask": "190.02",
        "bid_size": "300",
        "ask_size": "200",
        "trade_time": "1764161460000",
    }
]

INSTRUMENTS: list[dict[str, Any]] = [
    {
        "symbol": "AAPL",
        "instrument_id": "913256135",
        "name": "Apple Inc",
        "exchange_code": "NAS",
        "currency_code": "USD",
    }
]

TOKEN_PENDING: dict[str, Any] = {
    "token": "5e7c1b0b9a3d4f2e8c6a1b2c3d4e5f60",
    "expires": 1765457400000,
    "status": "PENDING",
}

TOKEN_NORMAL: dict[str, Any] = {**TOKEN_PENDING, "status": "NORMAL"}

ERROR: dict[str, Any] = {"error_code": "INVALID_PARAMETER", "message": "invalid time_in_force"}
