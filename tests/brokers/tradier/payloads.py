"""Recorded Tradier payloads, copied from the official documentation.

* ``PROFILE``: https://docs.tradier.com/docs/profile (Response).
* ``BALANCES_MARGIN``: https://docs.tradier.com/docs/balances, the ``margin`` variant (the
  page shows the margin, cash and pdt sub-objects side by side with comments).
* ``POSITIONS``: https://docs.tradier.com/docs/positions (first two of the seven).
* ``ORDERS``: the get-account-orders example (orders 228175 and 228749), ``ORDER``: the
  get-account-order example (228176),
  https://documentation.tradier.com/brokerage-api/accounts/get-account-orders and
  .../get-account-order.
* ``PLACED``: the place-order answer (257459, partner_id c4998eb7-...).
* ``HISTORY``: https://docs.tradier.com/docs/history (first four events).
* ``QUOTES``: https://documentation.tradier.com/brokerage-api/markets/get-quotes (AAPL and the
  VXX put).
* ``STREAM_OPEN`` / ``STREAM_FILLED`` / ``HEARTBEAT``:
  https://docs.tradier.com/docs/account-streaming-responses.
* ``INVALID_TOKEN``, ``BUYING_POWER``: QuantConnect's recorded Tradier answers
  (QuantConnect/Lean.Brokerages.Tradier tests), for bodies the docs describe but do not show.

Numbers are ``Decimal`` where Tradier sends a JSON number with a fraction: that is what
``response.json(parse_float=Decimal)`` produces from the wire.
"""

from __future__ import annotations

from decimal import Decimal as D
from typing import Any

PROFILE: dict[str, Any] = {
    "profile": {
        "account": [
            {
                "account_number": "VA000001",
                "classification": "individual",
                "date_created": "2016-08-01T21:08:55.000Z",
                "day_trader": False,
                "option_level": 6,
                "status": "active",
                "type": "margin",
                "last_update_date": "2016-08-01T21:08:55.000Z",
            },
            {
                "account_number": "VA000002",
                "classification": "traditional_ira",
                "date_created": "2016-08-05T17:24:34.000Z",
                "day_trader": False,
                "option_level": 3,
                "status": "active",
                "type": "margin",
                "last_update_date": "2016-08-05T17:24:34.000Z",
            },
            {
                "account_number": "VA000003",
                "classification": "rollover_ira",
                "date_created": "2016-08-01T21:08:56.000Z",
                "day_trader": False,
                "option_level": 2,
                "status": "active",
                "type": "cash",
                "last_update_date": "2016-08-01T21:08:56.000Z",
            },
        ],
        "id": "id-gcostanza",
        "name": "George Costanza",
    }
}

BALANCES_MARGIN: dict[str, Any] = {
    "balances": {
        "option_short_value": 0,
        "total_equity": D("17798.360000000000000000000000"),
        "account_number": "VA00000000",
        "account_type": "margin",
        "close_pl": D("-4813.000000000000000000"),
        "current_requirement": D("2557.00000000000000000000"),
        "equity": 0,
        "long_market_value": D("11434.50000000000000000000"),
        "market_value": D("11434.50000000000000000000"),
        "open_pl": D("546.900000000000000000000000"),
        "option_long_value": D("8877.5000000000000000000"),
        "option_requirement": 0,
        "pending_orders_count": 0,
        "short_market_value": 0,
        "stock_long_value": D("2557.00000000000000000000"),
        "total_cash": D("6363.860000000000000000000000"),
        "uncleared_funds": 0,
        "pending_cash": 0,
        "margin": {
            "fed_call": 0,
            "maintenance_call": 0,
            "option_buying_power": D("6363.860000000000000000000000"),
            "stock_buying_power": D("12727.7200000000000000"),
            "stock_short_value": 0,
            "sweep": 0,
        },
    }
}

CASH_DETAIL: dict[str, Any] = {
    "cash_available": D("4343.38000000"),
    "sweep": 0,
    "unsettled_funds": D("1310.00000000"),
}

POSITIONS: dict[str, Any] = {
    "positions": {
        "position": [
            {
                "cost_basis": D("207.01"),
                "date_acquired": "2018-08-08T14:41:11.405Z",
                "id": 130089,
                "quantity": D("1.00000000"),
                "symbol": "AAPL",
            },
            {
                "cost_basis": D("1870.70"),
                "date_acquired": "2018-08-08T14:42:00.774Z",
                "id": 130090,
                "quantity": D("1.00000000"),
                "symbol": "AMZN",
            },
        ]
    }
}

EXPIRED_LIMIT: dict[str, Any] = {
    "id": 228175,
    "type": "limit",
    "symbol": "AAPL",
    "side": "buy",
    "quantity": D("50.00000000"),
    "status": "expired",
    "duration": "pre",
    "price": D("22.0"),
    "avg_fill_price": D("0.00000000"),
    "exec_quantity": D("0.00000000"),
    "last_fill_price": D("0.00000000"),
    "last_fill_quantity": D("0.00000000"),
    "remaining_quantity": D("0.00000000"),
    "create_date": "2018-06-01T12:02:29.682Z",
    "transaction_date": "2018-06-01T12:30:02.385Z",
    "class": "equity",
}

OPTION_MARKET: dict[str, Any] = {
    "id": 228749,
    "type": "market",
    "symbol": "SPY",
    "side": "buy_to_open",
    "quantity": D("1.00000000"),
    "status": "expired",
    "duration": "pre",
    "avg_fill_price": D("0.00000000"),
    "exec_quantity": D("0.00000000"),
    "last_fill_price": D("0.00000000"),
    "last_fill_quantity": D("0.00000000"),
    "remaining_quantity": D("0.00000000"),
    "create_date": "2018-06-06T20:16:17.342Z",
    "transaction_date": "2018-06-06T20:16:17.357Z",
    "class": "option",
    "option_symbol": "SPY180720C00274000",
}

ORDERS: dict[str, Any] = {"orders": {"order": [EXPIRED_LIMIT, OPTION_MARKET]}}

FILLED_MARKET: dict[str, Any] = {
    "id": 228176,
    "type": "market",
    "symbol": "AAPL",
    "side": "buy",
    "quantity": D("50.00000000"),
    "status": "filled",
    "duration": "pre",
    "avg_fill_price": D("187.93"),
    "exec_quantity": D("50.00000000"),
    "last_fill_price": D("187.93"),
    "last_fill_quantity": D("50.00000000"),
    "remaining_quantity": D("0.00000000"),
    "create_date": "2018-06-01T12:02:37.377Z",
    "transaction_date": "2018-06-01T13:45:13.340Z",
    "class": "equity",
}

ORDER: dict[str, Any] = {"order": FILLED_MARKET}

PLACED: dict[str, Any] = {
    "order": {"id": 257459, "status": "ok", "partner_id": "c4998eb7-06e8-4820-a7ab-55d9760065fb"}
}

HISTORY: dict[str, Any] = {
    "history": {
        "event": [
            {
                "amount": D("10.06"),
                "date": "2018-10-31T00:00:00Z",
                "type": "trade",
                "trade": {
                    "commission": D("0.0000000000"),
                    "description": "GENERAL ELECTRIC COMPANY",
                    "price": D("10.060000"),
                    "quantity": D("-1.00000000"),
                    "symbol": "GE",
                    "trade_type": "Equity",
                },
            },
            {
                "amount": D("0.12"),
                "date": "2018-10-25T00:00:00Z",
                "type": "dividend",
                "adjustment": {
                    "description": "GENERAL ELECTRIC COMPANY",
                    "quantity": D("0.00000000"),
                },
            },
            {
                "amount": 0,
                "date": "2018-09-21T00:00:00Z",
                "type": "option",
                "option": {
                    "option_type": "OPTEXP",
                    "description": "Expired",
                    "quantity": D("-1.00000000"),
                },
            },
            {
                "amount": D("-13.05"),
                "date": "2018-06-19T00:00:00Z",
                "type": "trade",
                "trade": {
                    "commission": D("0.0000000000"),
                    "description": "GENERAL ELECTRIC COMPANY",
                    "price": D("13.050000"),
                    "quantity": D("1.00000000"),
                    "symbol": "GE",
                    "trade_type": "Equity",
                },
            },
        ]
    }
}

QUOTES: dict[str, Any] = {
    "quotes": {
        "quote": [
            {
                "symbol": "AAPL",
                "description": "Apple Inc",
                "exch": "Q",
                "type": "stock",
                "last": D("208.21"),
                "change": D("-3.54"),
                "volume": 25288395,
                "open": D("204.29"),
                "high": D("208.71"),
                "low": D("203.5"),
                "close": None,
                "bid": D("208.19"),
                "ask": D("208.21"),
                "change_percentage": D("-1.68"),
                "average_volume": 27215269,
                "last_volume": 100,
                "trade_date": 1557168406000,
                "prevclose": D("211.75"),
                "week_52_high": D("233.47"),
                "week_52_low": D("142.0"),
                "bidsize": 12,
                "bidexch": "Q",
                "bid_date": 1557168406000,
                "asksize": 1,
                "askexch": "Y",
                "ask_date": 1557168406000,
                "root_symbols": "AAPL",
            },
            {
                "symbol": "VXX190517P00016000",
                "description": "VXX May 17 2019 $16.00 Put",
                "exch": "Z",
                "type": "option",
                "last": None,
                "change": None,
                "volume": 0,
                "open": None,
                "high": None,
                "low": None,
                "close": None,
                "bid": D("0.0"),
                "ask": D("0.01"),
                "underlying": "VXX",
                "strike": D("16.0"),
                "change_percentage": None,
                "average_volume": 0,
                "last_volume": 0,
                "trade_date": 0,
                "prevclose": None,
                "week_52_high": D("0.0"),
                "week_52_low": D("0.0"),
                "bidsize": 0,
                "bidexch": "I",
                "bid_date": 1557167321000,
                "asksize": 618,
                "askexch": "Z",
                "ask_date": 1557168367000,
                "open_interest": 10,
                "contract_size": 100,
                "expiration_date": "2019-05-17",
                "expiration_type": "standard",
                "option_type": "put",
                "root_symbol": "VXX",
            },
        ]
    }
}

STREAM_OPEN: dict[str, Any] = {
    "id": 1107075,
    "event": "order",
    "status": "open",
    "type": "limit",
    "price": D("10.0"),
    "stop_price": D("0.0"),
    "avg_fill_price": D("0.0"),
    "exec_quantity": D("0.0"),
    "last_fill_quantity": D("0.0"),
    "remaining_quantity": D("2.0"),
    "transaction_date": "2021-08-09T20:05:35.277Z",
    "create_date": "2021-08-09T20:05:35.277Z",
    "account": "6YA",
}

STREAM_FILLED: dict[str, Any] = {
    **STREAM_OPEN,
    "status": "filled",
    "avg_fill_price": D("10.0"),
    "exec_quantity": D("2.0"),
    "remaining_quantity": D("0.0"),
}

HEARTBEAT: dict[str, Any] = {
    "event": "heartbeat",
    "status": "active",
    "timestamp": "2025-12-09T18:03:51.029067177Z",
}

INVALID_TOKEN: dict[str, Any] = {
    "fault": {
        "faultstring": "Invalid Access Token",
        "detail": {"errorcode": "keymanagement.service.invalid_access_token"},
    }
}

BUYING_POWER: dict[str, Any] = {
    "errors": {
        "error": ["Backoffice rejected override of the order.", "DayTradingBuyingPowerExceeded"]
    }
}
