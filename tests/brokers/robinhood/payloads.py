"""Robinhood Crypto Trading API payloads, in the shapes of the official documentation.

Source: https://docs.robinhood.com/crypto/trading/ (Redoc "Trading API 1.0.0"), the response
samples of "Get Crypto Trading Account Details", "Get Best Price", "Get Crypto Holdings",
"Get Crypto Orders", "Place New Crypto Order" and "Cancel Open Crypto Order", and the
"Error Responses" section. The docs' samples keep their own ids (``497f6eca-...``,
``11299b2b-...``) and timestamps (``2019-08-24T14:15:22Z``); where a sample shows only a
type placeholder (``"string"``, ``0``) a value of that type is filled in. Numbers the docs
type as numbers are ``Decimal`` here: that is what ``response.json(parse_float=Decimal)``
produces from the wire.

``SIGNATURE_EXAMPLE``: the docs' "Example Signature" (key pair, request and signature).
"""

from __future__ import annotations

from decimal import Decimal as D
from typing import Any

ACCOUNT: dict[str, Any] = {
    "account_number": "5RH00001234",
    "status": "active",
    "buying_power": "2500.75",
    "buying_power_currency": "USD",
}

BEST_BID_ASK: dict[str, Any] = {
    "results": [
        {
            "symbol": "BTC-USD",
            "price": D("65000.5"),
            "bid_inclusive_of_sell_spread": D("64900.25"),
            "sell_spread": D("0.0015"),
            "ask_inclusive_of_buy_spread": D("65100.75"),
            "buy_spread": D("0.0015"),
            "timestamp": "2019-08-24T14:15:22Z",
        }
    ]
}

HOLDINGS: dict[str, Any] = {
    "next": None,
    "previous": None,
    "results": [
        {
            "account_number": "5RH00001234",
            "asset_code": "BTC",
            "total_quantity": D("0.5"),
            "quantity_available_for_trading": D("0.5"),
        }
    ],
}

# "Get Crypto Orders" sample: a limit order (the sample's type), one execution.
LIMIT_ORDER: dict[str, Any] = {
    "id": "497f6eca-6276-4993-bfeb-53cbbbba6f08",
    "account_number": "5RH00001234",
    "symbol": "BTC-USD",
    "client_order_id": "11299b2b-61e3-43e7-b9f7-dee77210bb29",
    "side": "buy",
    "executions": [
        {"effective_price": "60000.00", "quantity": "0.1", "timestamp": "2019-08-24T14:15:22Z"}
    ],
    "type": "limit",
    "state": "partially_filled",
    "average_price": D("60000.00"),
    "filled_asset_quantity": D("0.1"),
    "created_at": "2019-08-24T14:10:00Z",
    "updated_at": "2019-08-24T14:15:22Z",
    "limit_order_config": {
        "asset_quantity": D("0.25"),
        "limit_price": D("60000.00"),
        "time_in_force": "gtc",
    },
}

MARKET_ORDER: dict[str, Any] = {
    "id": "5f1c2e0a-9d4b-4a4e-8b8f-2f0a2b1c3d4e",
    "account_number": "5RH00001234",
    "symbol": "ETH-USD",
    "client_order_id": "131de903-5a9c-4260-abc1-28d562a5dcf0",
    "side": "sell",
    "executions": [],
    "type": "market",
    "state": "open",
    "average_price": None,
    "filled_asset_quantity": D("0"),
    "created_at": "2023-10-31T20:57:50Z",
    "updated_at": "2023-10-31T20:57:50Z",
    "market_order_config": {"asset_quantity": D("0.1")},
}

STOP_LIMIT_ORDER: dict[str, Any] = {
    "id": "a1b2c3d4-0000-4000-8000-000000000001",
    "account_number": "5RH00001234",
    "symbol": "BTC-USD",
    "client_order_id": "0b9a8c7d-6e5f-4a3b-9c2d-1e0f9a8b7c6d",
    "side": "sell",
    "executions": [],
    "type": "stop_limit",
    "state": "canceled",
    "average_price": None,
    "filled_asset_quantity": D("0"),
    "created_at": "2023-10-31T20:57:50Z",
    "updated_at": "2023-10-31T21:00:00Z",
    "stop_limit_order_config": {
        "asset_quantity": D("0.2"),
        "limit_price": D("58000"),
        "stop_price": D("58500"),
        "time_in_force": "gtc",
    },
}

ORDERS_PAGE: dict[str, Any] = {
    "next": "https://trading.robinhood.com/api/v1/crypto/trading/orders/?cursor=cD0y",
    "previous": None,
    "results": [LIMIT_ORDER, MARKET_ORDER],
}

ORDERS_LAST_PAGE: dict[str, Any] = {
    "next": None,
    "previous": "https://trading.robinhood.com/api/v1/crypto/trading/orders/?cursor=cD0w",
    "results": [STOP_LIMIT_ORDER],
}

TRADING_PAIRS: dict[str, Any] = {
    "next": None,
    "previous": None,
    "results": [
        {
            "asset_code": "BTC",
            "quote_code": "USD",
            "quote_increment": "0.01",
            "asset_increment": "0.00000001",
            "max_order_size": "20",
            "min_order_size": "0.000001",
            "status": "tradable",
            "symbol": "BTC-USD",
        }
    ],
}

CANCEL_TEXT = "Cancel request was submitted for order 497f6eca-6276-4993-bfeb-53cbbbba6f08"

# "Error Responses": the docs' example (its JSON omits a comma after "validation_error"; the
# object is reproduced as it parses).
VALIDATION_ERROR: dict[str, Any] = {
    "type": "validation_error",
    "errors": [{"detail": "Must be a valid UUID.", "attr": "client_order_id"}],
}

SIGNATURE_EXAMPLE: dict[str, Any] = {
    "private_key": "xQnTJVeQLmw1/Mg2YimEViSpw/SdJcgNXZ5kQkAXNPU=",
    "public_key": "jPItx4TLjcnSUnmnXQQyAKL4eJj3+oWNNMmmm2vATqk=",
    "api_key": "rh-api-6148effc-c0b1-486c-8940-a1d099456be6",
    "method": "POST",
    "path": "/api/v1/crypto/trading/orders/",
    # The docs' Python snippet formats the body dict into the message: its repr, which is
    # what yields the published signature.
    "body": str(
        {
            "client_order_id": "131de903-5a9c-4260-abc1-28d562a5dcf0",
            "side": "buy",
            "symbol": "BTC-USD",
            "type": "market",
            "market_order_config": {"asset_quantity": "0.1"},
        }
    ),
    "timestamp": 1698708981,
    "signature": (
        "q/nEtxp/P2Or3hph3KejBqnw5o9qeuQ+hYRnB56FaHbjDsNUY9KhB1asMxohDnzdVFSD7StaTqjSd9U9HvaRAw=="
    ),
}
