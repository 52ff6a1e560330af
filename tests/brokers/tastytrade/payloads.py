"""tastytrade payloads: recorded answers and the official docs' examples.

Sources, per payload:

* ``SUBMIT_ANSWER``: a ``POST /accounts/{n}/orders`` answer recorded against the sandbox
  (QuantConnect/Lean.Brokerages.Tastytrade ``TestData/Post_Submit_Order_Response.json``).
* ``FILLED_NOTIFICATION``: an account-streamer ``Order`` notification recorded the same way
  (QuantConnect/Lean.Brokerages.Tastytrade ``TastytradeJsonConverterTests``).
* ``STREAM_CONNECT_OK``, ``STREAM_CONNECT_ERROR``, ``STREAM_HEARTBEAT_OK``: recorded streamer
  answers (same test file).
* ``LIVE_ORDERS_DOC``: the ``GET /accounts/{account_number}/orders/live`` example of
  https://developer.tastytrade.com/order-management (two option orders: not modelled).
* ``POSITIONS``, ``BALANCES``: recorded ``/positions`` and ``/balances`` answers
  (QuantConnect ``TestData/Get_Positions.json``, ``Get_Account_Balance.json``).
* ``ERRORS``: recorded error bodies (QuantConnect ``TestData/Error_Responses.json``) and the
  margin refusal quoted in the docs-derived order guide.
* ``ACCOUNTS``, ``TRANSACTIONS``, ``MARKET_DATA``, ``TOKEN_ANSWER``, ``EQUITY``: no recorded
  example was found; these carry the documented field names (tastyware/tastytrade models
  ``Account``, ``Transaction``, ``MarketData``, ``Equity``; the OAuth2 page for the token
  answer) with values of our own.
"""

from __future__ import annotations

import copy
from typing import Any

SUBMIT_ANSWER: dict[str, Any] = {
    "data": {
        "buying-power-effect": {
            "change-in-margin-requirement": "1.0",
            "change-in-margin-requirement-effect": "Debit",
            "change-in-buying-power": "1.001",
            "change-in-buying-power-effect": "Debit",
            "current-buying-power": "1000000.0",
            "current-buying-power-effect": "Credit",
            "new-buying-power": "999999.999",
            "new-buying-power-effect": "Credit",
            "isolated-order-margin-requirement": "0.0",
            "isolated-order-margin-requirement-effect": "None",
            "is-spread": False,
            "impact": "1.001",
            "effect": "Debit",
        },
        "fee-calculation": {
            "regulatory-fees": "0.0",
            "regulatory-fees-effect": "None",
            "clearing-fees": "0.001",
            "clearing-fees-effect": "Debit",
            "commission": "0.0",
            "commission-effect": "None",
            "proprietary-index-option-fees": "0.0",
            "proprietary-index-option-fees-effect": "None",
            "total-fees": "0.001",
            "total-fees-effect": "Debit",
        },
        "order": {
            "id": 270561,
            "account-number": "5WX06827",
            "cancellable": False,
            "editable": False,
            "edited": False,
            "global-request-id": "f6c5863356cf1be83fed349d54ee4862",
            "order-type": "Market",
            "received-at": "2025-05-28T13:38:47.851+00:00",
            "size": 1,
            "status": "Routed",
            "time-in-force": "Day",
            "underlying-instrument-type": "Equity",
            "underlying-symbol": "AAPL",
            "updated-at": 1748439528049,
            "legs": [
                {
                    "action": "Buy to Open",
                    "instrument-type": "Equity",
                    "quantity": 1,
                    "remaining-quantity": 1,
                    "symbol": "AAPL",
                    "fills": [],
                }
            ],
        },
        "warnings": [],
    },
    "context": "/accounts/5WX06827/orders",
}

FILLED_NOTIFICATION: dict[str, Any] = {
    "type": "Order",
    "data": {
        "id": 270602,
        "account-number": "5WX06827",
        "cancellable": False,
        "editable": False,
        "edited": False,
        "ext-client-order-id": "0a000000d40004210a",
        "ext-exchange-order-number": "910533337354",
        "ext-global-order-number": 212,
        "global-request-id": "cac193dce95dd480f7c191e8655f54a9",
        "order-type": "Market",
        "received-at": "2025-05-28T16:00:01.651+00:00",
        "size": 1,
        "status": "Filled",
        "terminal-at": "2025-05-28T16:00:02.550+00:00",
        "time-in-force": "Day",
        "underlying-instrument-type": "Equity",
        "underlying-symbol": "AAPL",
        "updated-at": 1748448002553,
        "legs": [
            {
                "action": "Buy to Open",
                "instrument-type": "Equity",
                "quantity": 1,
                "remaining-quantity": 0,
                "symbol": "AAPL",
                "fills": [
                    {
                        "destination-venue": "TEST_A",
                        "ext-exec-id": "134",
                        "ext-group-fill-id": "0",
                        "fill-id": "2_TW::TEST_A1::20250528.135-TEST_FILL",
                        "fill-price": "1.0",
                        "filled-at": "2025-05-28T16:00:01.953+00:00",
                        "quantity": 1,
                    }
                ],
            }
        ],
    },
    "timestamp": 1748448002620,
}

STREAM_CONNECT_OK: dict[str, Any] = {
    "status": "ok",
    "action": "connect",
    "web-socket-session-id": "c8531fa0",
    "value": ["5WX06827"],
    "request-id": 1,
}
STREAM_CONNECT_ERROR: dict[str, Any] = {
    "status": "error",
    "action": "connect",
    "web-socket-session-id": "423f58ac",
    "message": "failed",
}
STREAM_HEARTBEAT_OK: dict[str, Any] = {
    "status": "ok",
    "action": "heartbeat",
    "web-socket-session-id": "13ec76b6",
    "request-id": 3,
}

LIVE_ORDERS_DOC: dict[str, Any] = {
    "data": {
        "items": [
            {
                "id": 54758826,
                "account-number": "5WT00001",
                "time-in-force": "GTC",
                "order-type": "Limit",
                "size": 1,
                "underlying-symbol": "QQQ",
                "price": "3.0",
                "price-effect": "Debit",
                "status": "Live",
                "cancellable": True,
                "editable": True,
                "edited": False,
                "legs": [
                    {
                        "instrument-type": "Equity Option",
                        "symbol": "QQQ 191115C00187000",
                        "quantity": 1,
                        "remaining-quantity": 1,
                        "action": "Buy to Close",
                        "fills": [],
                    }
                ],
            },
            {
                "id": 53959020,
                "account-number": "5WT00001",
                "time-in-force": "GTC",
                "order-type": "Limit",
                "size": 1,
                "underlying-symbol": "SPY",
                "price": "1.27",
                "price-effect": "Debit",
                "status": "Cancelled",
                "cancellable": True,
                "editable": True,
                "edited": False,
                "legs": [
                    {
                        "instrument-type": "Equity Option",
                        "symbol": "SPY 191018P00300000",
                        "quantity": 1,
                        "remaining-quantity": 1,
                        "action": "Buy to Close",
                        "fills": [],
                    },
                    {
                        "instrument-type": "Equity Option",
                        "symbol": "SPY 191018P00270000",
                        "quantity": 1,
                        "remaining-quantity": 1,
                        "action": "Sell to Close",
                        "fills": [],
                    },
                ],
            },
        ]
    },
    "api-version": "v1",
    "context": "/accounts/5WT05758/orders/live",
}

POSITIONS: dict[str, Any] = {
    "data": {
        "items": [
            {
                "account-number": "5WT00000",
                "symbol": "AAPL",
                "instrument-type": "Equity",
                "underlying-symbol": "AAPL",
                "quantity": "100",
                "quantity-direction": "Long",
                "close-price": "282.48",
                "average-open-price": "288.7",
                "average-yearly-market-close-price": "123.18",
                "average-daily-market-close-price": "282.48",
                "multiplier": 1,
                "cost-effect": "Credit",
                "is-suppressed": False,
                "is-frozen": False,
                "restricted-quantity": "0.0",
                "realized-day-gain": "0.0",
                "realized-day-gain-effect": "None",
                "realized-day-gain-date": "2022-11-01",
                "realized-today": "0.0",
                "realized-today-effect": "None",
                "realized-today-date": "2022-11-01",
                "created-at": "2022-08-22T17:56:51.872+00:00",
                "updated-at": "2022-11-01T21:49:54.095+00:00",
            }
        ]
    },
    "context": "/accounts/5WT00000/positions",
}

BALANCES: dict[str, Any] = {
    "data": {
        "account-number": "5WZ81257",
        "available-trading-funds": "0.0",
        "bond-margin-requirement": "0.0",
        "cash-available-to-withdraw": "0.0",
        "cash-balance": "0.0",
        "cash-settle-balance": "0.0",
        "closed-loop-available-balance": "0.0",
        "cryptocurrency-margin-requirement": "0.0",
        "currency": "USD",
        "day-equity-call-value": "0.0",
        "day-trade-excess": "0.0",
        "day-trading-buying-power": "0.0",
        "day-trading-call-value": "0.0",
        "derivative-buying-power": "0.0",
        "equity-buying-power": "0.0",
        "equity-offering-margin-requirement": "0.0",
        "fixed-income-security-margin-requirement": "0.0",
        "futures-margin-requirement": "0.0",
        "long-bond-value": "0.0",
        "long-cryptocurrency-value": "0.0",
        "long-derivative-value": "0.0",
        "long-equity-value": "0.0",
        "long-fixed-income-security-value": "0.0",
        "long-futures-derivative-value": "0.0",
        "long-futures-value": "0.0",
        "long-margineable-value": "0.0",
        "maintenance-call-value": "0.0",
        "maintenance-requirement": "0.0",
        "margin-equity": "0.0",
        "margin-settle-balance": "0.0",
        "net-liquidating-value": "0.0",
        "pending-cash": "0.0",
        "pending-cash-effect": "None",
        "reg-t-call-value": "0.0",
        "short-cryptocurrency-value": "0.0",
        "short-derivative-value": "0.0",
        "short-equity-value": "0.0",
        "short-futures-derivative-value": "0.0",
        "short-futures-value": "0.0",
        "short-margineable-value": "0.0",
        "sma-equity-option-buying-power": "0.0",
        "special-memorandum-account-apex-adjustment": "0.0",
        "special-memorandum-account-value": "0.0",
        "total-settle-balance": "0.0",
        "unsettled-cryptocurrency-fiat-amount": "0.0",
        "unsettled-cryptocurrency-fiat-effect": "None",
        "used-derivative-buying-power": "0.0",
        "snapshot-date": "2025-05-14",
        "reg-t-margin-requirement": "0.0",
        "futures-overnight-margin-requirement": "0.0",
        "futures-intraday-margin-requirement": "0.0",
        "maintenance-excess": "0.0",
        "pending-margin-interest": "0.0",
        "buying-power-adjustment": "0.0",
        "buying-power-adjustment-effect": "None",
        "effective-cryptocurrency-buying-power": "0.0",
        "total-pending-liquidity-pool-rebate": "0.0",
        "updated-at": "2025-05-13T17:09:41.714+00:00",
    },
    "context": "/accounts/5W/balances",
}

ERRORS: dict[str, dict[str, Any]] = {
    "not_permitted": {"error": {"code": "not_permitted", "message": "User not permitted access"}},
    "gtc_market": {
        "error": {
            "code": "preflight_check_failure",
            "message": "One or more preflight checks failed",
            "errors": [
                {
                    "code": "gtc_market_orders_not_supported",
                    "message": "GTC/GTD Market orders are not supported.",
                }
            ],
        }
    },
    "margin": {
        "error": {
            "code": "preflight_check_failure",
            "message": "One or more preflight checks failed",
            "errors": [
                {
                    "code": "margin_check_failed",
                    "message": (
                        "Account does not have sufficient buying power available for this order."
                    ),
                }
            ],
        }
    },
}

ACCOUNTS: dict[str, Any] = {
    "data": {
        "items": [
            {
                "account": {
                    "account-number": "5WX06827",
                    "external-id": "A0000196557",
                    "opened-at": "2025-05-01T14:12:03.101+00:00",
                    "nickname": "Individual",
                    "account-type-name": "Individual",
                    "day-trader-status": False,
                    "is-closed": False,
                    "is-firm-error": False,
                    "is-firm-proprietary": False,
                    "is-futures-approved": False,
                    "is-test-drive": False,
                    "margin-or-cash": "Margin",
                    "is-foreign": False,
                    "funding-date": "2025-05-02",
                    "investment-objective": "SPECULATION",
                    "suitable-options-level": "No Restrictions",
                    "created-at": "2025-05-01T14:12:03.101+00:00",
                },
                "authority-level": "owner",
            },
            {
                "account": {
                    "account-number": "5WX09999",
                    "nickname": "Old IRA",
                    "account-type-name": "Roth IRA",
                    "is-closed": True,
                    "margin-or-cash": "Cash",
                },
                "authority-level": "owner",
            },
        ]
    },
    "context": "/customers/me/accounts",
}

TRANSACTIONS: dict[str, Any] = {
    "data": {
        "items": [
            {
                "id": 41000002,
                "account-number": "5WX06827",
                "transaction-type": "Trade",
                "transaction-sub-type": "Buy to Open",
                "description": "Bought 1 AAPL @ 1.00",
                "executed-at": "2025-05-28T16:00:01.953+00:00",
                "transaction-date": "2025-05-28",
                "value": "1.0",
                "value-effect": "Debit",
                "net-value": "1.001",
                "net-value-effect": "Debit",
                "is-estimated-fee": True,
                "symbol": "AAPL",
                "instrument-type": "Equity",
                "underlying-symbol": "AAPL",
                "action": "Buy to Open",
                "quantity": "1.0",
                "price": "1.0",
                "order-id": 270602,
            },
            {
                "id": 41000001,
                "account-number": "5WX06827",
                "transaction-type": "Money Movement",
                "transaction-sub-type": "Deposit",
                "description": "ACH DEPOSIT",
                "executed-at": "2025-05-02T12:00:00.000+00:00",
                "transaction-date": "2025-05-02",
                "value": "2500.0",
                "value-effect": "Credit",
                "net-value": "2500.0",
                "net-value-effect": "Credit",
                "is-estimated-fee": False,
            },
            {
                "id": 41000000,
                "account-number": "5WX06827",
                "transaction-type": "Receive Deliver",
                "transaction-sub-type": "ACAT",
                "description": "ACAT transfer in",
                "executed-at": "2025-05-01T12:00:00.000+00:00",
                "transaction-date": "2025-05-01",
                "value": "0.0",
                "value-effect": "None",
                "net-value": "0.0",
                "net-value-effect": "None",
                "is-estimated-fee": False,
            },
        ]
    },
    "context": "/accounts/5WX06827/transactions",
    "pagination": {
        "per-page": 250,
        "page-offset": 0,
        "item-offset": 0,
        "total-items": 3,
        "total-pages": 1,
        "current-item-count": 3,
        "previous-link": None,
        "next-link": None,
        "paging-link-template": None,
    },
}

MARKET_DATA: dict[str, Any] = {
    "data": {
        "items": [
            {
                "symbol": "AAPL",
                "instrument-type": "Equity",
                "updated-at": "2025-05-28T16:00:01.000+00:00",
                "bid": "199.95",
                "bid-size": "300.0",
                "ask": "200.05",
                "ask-size": "200.0",
                "mid": "200.0",
                "mark": "200.0",
                "last": "200.01",
                "close-price-type": "Regular",
                "summary-date": "2025-05-28",
                "prev-close-date": "2025-05-27",
                "prev-close-price-type": "Regular",
                "halt-start-time": -1,
                "halt-end-time": -1,
            },
            {
                "symbol": "HALT",
                "instrument-type": "Equity",
                "updated-at": "2025-05-28T16:00:01.000+00:00",
                "mark": "10.0",
                "close-price-type": "Regular",
                "summary-date": "2025-05-28",
                "prev-close-date": "2025-05-27",
                "prev-close-price-type": "Regular",
                "halt-start-time": 1748440000000,
                "halt-end-time": -1,
            },
        ]
    },
    "context": "/market-data/by-type",
}

TOKEN_ANSWER: dict[str, Any] = {
    "access_token": "access-token-for-tests-0001",
    "token_type": "Bearer",
    "expires_in": 900,
}

EQUITY: dict[str, Any] = {
    "data": {
        "id": 726,
        "symbol": "AAPL",
        "instrument-type": "Equity",
        "is-index": False,
        "description": "Apple Inc. - Common Stock",
        "lendability": "Easy To Borrow",
        "market-time-instrument-collection": "Equity",
        "is-closing-only": False,
        "is-options-closing-only": False,
        "active": True,
        "is-illiquid": False,
        "is-etf": False,
        "streamer-symbol": "AAPL",
    },
    "context": "/instruments/equities/AAPL",
}


def order(**changes: Any) -> dict[str, Any]:
    """The recorded submitted order with some fields changed (a deep copy)."""
    body: dict[str, Any] = copy.deepcopy(SUBMIT_ANSWER["data"]["order"])
    legs = changes.pop("legs", None)
    body.update(changes)
    if legs is not None:
        body["legs"][0].update(legs)
    return body
