"""Recorded Alpaca payloads, copied from the official Trading API spec and docs.

``EQUITY_ORDER`` and ``CRYPTO_ORDER``: components/examples EquityOrderResponse and
CryptoOrderResponse of https://docs.alpaca.markets/openapi/trading-api.json (MIT, via
alpacahq/alpaca-mcp-server). ``FILL_EVENT``: the trade_updates example of
https://docs.alpaca.markets/docs/websocket-streaming, with the equity order above as its order.
"""

from __future__ import annotations

from typing import Any

EQUITY_ORDER: dict[str, Any] = {
    "asset_class": "us_equity",
    "asset_id": "b0b6dd9d-8b9b-48a9-ba46-b9d54906e415",
    "canceled_at": None,
    "client_order_id": "5680c4bc-9ac1-4a12-a44c-df427ba53032",
    "created_at": "2023-12-12T22:31:24.668464435Z",
    "expired_at": None,
    "extended_hours": False,
    "failed_at": None,
    "filled_at": None,
    "filled_avg_price": None,
    "filled_qty": "0",
    "hwm": None,
    "id": "7b08df51-c1ac-453c-99f9-323a5f075f0d",
    "legs": None,
    "limit_price": "150",
    "notional": None,
    "order_class": "",
    "order_type": "limit",
    "qty": "2",
    "replaced_at": None,
    "replaced_by": None,
    "replaces": None,
    "side": "buy",
    "source": None,
    "status": "accepted",
    "stop_price": None,
    "submitted_at": "2023-12-12T22:31:24.577215743Z",
    "subtag": None,
    "symbol": "AAPL",
    "time_in_force": "gtc",
    "trail_percent": None,
    "trail_price": None,
    "type": "limit",
    "updated_at": "2023-12-12T22:31:24.668464435Z",
}

CRYPTO_ORDER: dict[str, Any] = {
    **EQUITY_ORDER,
    "asset_class": "crypto",
    "asset_id": "a1733398-6acc-4e92-af24-0d0667f78713",
    "client_order_id": "5b5d3d67-06ad-4ffa-af65-a117d0fc5a59",
    "created_at": "2023-12-12T22:36:51.337711497Z",
    "id": "38e482f3-79a8-4f75-a057-f07a1ec6a397",
    "limit_price": "2100",
    "qty": "0.02",
    "status": "pending_new",
    "submitted_at": "2023-12-12T22:36:51.313261061Z",
    "symbol": "ETH/USD",
    "updated_at": "2023-12-12T22:36:51.337754768Z",
}

FILL_EVENT: dict[str, Any] = {
    "event": "fill",
    "execution_id": "2f63ea93-423d-4169-b3f6-3fdafc10c418",
    "order": {
        **EQUITY_ORDER,
        "filled_at": "2023-12-12T22:40:01.123456789Z",
        "filled_avg_price": "149.98",
        "filled_qty": "2",
        "status": "filled",
        "updated_at": "2023-12-12T22:40:01.123456789Z",
    },
    "position_qty": "2",
    "price": "149.98",
    "qty": "2",
    "timestamp": "2023-12-12T22:40:01.123456789Z",
}
