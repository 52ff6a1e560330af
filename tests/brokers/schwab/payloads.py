"""Schwab payloads as the docs show them, as plain functions returning fresh copies.

Sources: the Trader API spec (schemas ``Order``, ``OrderRequest``, ``SecuritiesAccount``,
``Position``, ``Transaction``, ``ServiceError``; its generated examples use ISO times with
``Z`` and placeholder values), the live shapes reproduced by alexgolec/schwab-py
(``tests/testdata/preferences.json``, ``tests/streaming_test.py``) and QuantConnect Lean
(``CharlesSchwabApiResponseJsonConverterTests.cs``: accountNumbers, the LOGIN request).
Numbers are written as JSON numbers, as Schwab sends them.
"""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any


def wire(body: Any) -> Any:
    """As the adapter parses Schwab's JSON: every non-integer number a Decimal."""
    return json.loads(json.dumps(body), parse_float=Decimal)


def account_numbers() -> str:
    # Lean's test fixture (DeserializeAccountNumbersResponse), without its trailing comma.
    return (
        '[{"accountNumber": "123", "hashValue": "zxV23"}, '
        '{"accountNumber": "456", "hashValue": "maspod2"}]'
    )


def user_preference() -> str:
    # alexgolec/schwab-py tests/testdata/preferences.json
    return json.dumps(
        {
            "accounts": [
                {
                    "accountNumber": "1000",
                    "primaryAccount": True,
                    "type": "BROKERAGE",
                    "nickName": "Individual",
                    "displayAcctId": "...000",
                    "autoPositionEffect": False,
                    "accountColor": "Green",
                }
            ],
            "streamerInfo": [
                {
                    "streamerSocketUrl": "wss://streamer-api.schwab.com/ws",
                    "schwabClientCustomerId": "client-customer-id",
                    "schwabClientCorrelId": "client-correlation-id",
                    "schwabClientChannel": "client-channel",
                    "schwabClientFunctionId": "client-function-id",
                }
            ],
            "offers": [{"level2Permissions": True, "mktDataPermission": "NP"}],
        }
    )


def order(**overrides: Any) -> dict[str, Any]:
    """A single-leg equity ``Order`` in the live form (``+0000`` times, int64 ids)."""
    body: dict[str, Any] = {
        "session": "NORMAL",
        "duration": "DAY",
        "orderType": "LIMIT",
        "complexOrderStrategyType": "NONE",
        "quantity": 10,
        "filledQuantity": 4,
        "remainingQuantity": 6,
        "requestedDestination": "AUTO",
        "destinationLinkName": "NITE",
        "price": 187.25,
        "orderLegCollection": [
            {
                "orderLegType": "EQUITY",
                "legId": 1,
                "instrument": {
                    "assetType": "EQUITY",
                    "cusip": "037833100",
                    "symbol": "AAPL",
                    "instrumentId": 1973757747,
                },
                "instruction": "BUY",
                "positionEffect": "OPENING",
                "quantity": 10,
            }
        ],
        "orderStrategyType": "SINGLE",
        "orderId": 1000847123456,
        "cancelable": True,
        "editable": True,
        "status": "WORKING",
        "enteredTime": "2024-03-19T14:30:00+0000",
        "tag": "API_TOS:CHART",
        "accountNumber": 12345678,
        "orderActivityCollection": [
            {
                "activityType": "EXECUTION",
                "activityId": 68424546234,
                "executionType": "FILL",
                "quantity": 3,
                "orderRemainingQuantity": 7,
                "executionLegs": [
                    {
                        "legId": 1,
                        "quantity": 3,
                        "mismarkedQuantity": 0,
                        "price": 187.2,
                        "time": "2024-03-19T14:30:01+0000",
                        "instrumentId": 1973757747,
                    }
                ],
            },
            {
                "activityType": "EXECUTION",
                "activityId": 68424546235,
                "executionType": "FILL",
                "quantity": 1,
                "orderRemainingQuantity": 6,
                "executionLegs": [
                    {
                        "legId": 1,
                        "quantity": 1,
                        "mismarkedQuantity": 0,
                        "price": 187.25,
                        "time": "2024-03-19T14:30:02+0000",
                        "instrumentId": 1973757747,
                    }
                ],
            },
        ],
    }
    body.update(overrides)
    return dict(wire(body))


def spec_order_example() -> dict[str, Any]:
    """The shape of the spec's generated ``Order`` example (ISO ``Z`` times, strings as ids)."""
    body = {
        "session": "NORMAL",
        "duration": "GOOD_TILL_CANCEL",
        "orderType": "STOP_LIMIT",
        "complexOrderStrategyType": "NONE",
        "quantity": 5,
        "filledQuantity": 0,
        "remainingQuantity": 5,
        "stopPrice": 170.5,
        "price": 170,
        "orderLegCollection": [
            {
                "orderLegType": "EQUITY",
                "legId": 1,
                "instrument": {"assetType": "EQUITY", "symbol": "MSFT"},
                "instruction": "SELL",
                "positionEffect": "CLOSING",
                "quantity": 5,
            }
        ],
        "orderStrategyType": "SINGLE",
        "orderId": 42,
        "cancelable": True,
        "editable": False,
        "status": "AWAITING_STOP_CONDITION",
        "enteredTime": "2024-03-29T15:24:37.954Z",
        "accountNumber": 12345678,
    }
    return dict(wire(body))


def order_request_limit() -> dict[str, Any]:
    """Shaped like the "Place Order Samples" of Schwab's order guide (price as a string),
    with an equity leg instead of the sample's option leg."""
    return {
        "orderType": "LIMIT",
        "session": "NORMAL",
        "price": "6.45",
        "duration": "DAY",
        "orderStrategyType": "SINGLE",
        "orderLegCollection": [
            {
                "instruction": "BUY",
                "quantity": 4,
                "instrument": {"symbol": "XYZ", "assetType": "EQUITY"},
            }
        ],
    }


def cash_account(with_positions: bool = True) -> dict[str, Any]:
    """``Account`` with a ``CashAccount`` (spec field names)."""
    body: dict[str, Any] = {
        "securitiesAccount": {
            "type": "CASH",
            "accountNumber": "12345678",
            "roundTrips": 0,
            "isDayTrader": False,
            "isClosingOnlyRestricted": False,
            "pfcbFlag": False,
            "initialBalances": {"cashBalance": 5000.12, "accountValue": 6872.62},
            "currentBalances": {
                "accruedInterest": 0,
                "cashBalance": 4627.62,
                "cashReceipts": 0,
                "longOptionMarketValue": 0,
                "liquidationValue": 6500.12,
                "longMarketValue": 1872.5,
                "moneyMarketFund": 0,
                "savings": 0,
                "shortMarketValue": 0,
                "pendingDeposits": 0,
                "mutualFundValue": 0,
                "bondValue": 0,
                "shortOptionMarketValue": 0,
                "cashAvailableForTrading": 4500,
                "cashAvailableForWithdrawal": 4500,
                "cashCall": 0,
                "longNonMarginableMarketValue": 1872.5,
                "totalCash": 4627.62,
                "cashDebitCallValue": 0,
                "unsettledCash": 127.62,
            },
        },
        "aggregatedBalance": {"currentLiquidationValue": 6500.12, "liquidationValue": 6500.12},
    }
    if with_positions:
        body["securitiesAccount"]["positions"] = [
            {
                "shortQuantity": 0,
                "averagePrice": 180.1,
                "currentDayProfitLoss": 12.5,
                "currentDayProfitLossPercentage": 0.67,
                "longQuantity": 10,
                "settledLongQuantity": 10,
                "settledShortQuantity": 0,
                "instrument": {
                    "assetType": "EQUITY",
                    "cusip": "037833100",
                    "symbol": "AAPL",
                    "netChange": 1.25,
                },
                "marketValue": 1872.5,
                "maintenanceRequirement": 0,
                "averageLongPrice": 180.1,
                "taxLotAverageLongPrice": 180.1,
                "longOpenProfitLoss": 71.5,
                "previousSessionLongQuantity": 10,
                "currentDayCost": 0,
            }
        ]
    return dict(wire(body))


def margin_account() -> dict[str, Any]:
    body = cash_account(with_positions=False)
    account = body["securitiesAccount"]
    account["type"] = "MARGIN"
    account["currentBalances"] = wire(
        {
            "accruedInterest": 0,
            "cashBalance": 10000.5,
            "liquidationValue": 25000.5,
            "longMarketValue": 15000,
            "availableFunds": 18000,
            "buyingPower": 36000,
            "dayTradingBuyingPower": 0,
            "equity": 25000.5,
            "equityPercentage": 100,
            "maintenanceRequirement": 4500,
            "marginBalance": 0,
            "sma": 18000,
        }
    )
    return body


def quotes() -> dict[str, Any]:
    """``QuoteResponse``: keyed by symbol, ``errors.invalidSymbols`` for unknown ones."""
    body = {
        "AAPL": {
            "assetMainType": "EQUITY",
            "assetSubType": "COE",
            "quoteType": "NBBO",
            "realtime": True,
            "ssid": 1973757747,
            "symbol": "AAPL",
            "quote": {
                "52WeekHigh": 199.62,
                "52WeekLow": 164.075,
                "askMICId": "MEMX",
                "askPrice": 168.41,
                "askSize": 400,
                "askTime": 1715877338885,
                "bidMICId": "MEMX",
                "bidPrice": 168.4,
                "bidSize": 400,
                "bidTime": 1715877338885,
                "closePrice": 177.29,
                "highPrice": 178.36,
                "lastMICId": "XADF",
                "lastPrice": 168.405,
                "lastSize": 2,
                "lowPrice": 176.88,
                "mark": 168.405,
                "netChange": -8.885,
                "quoteTime": 1715877338885,
                "securityStatus": "Normal",
                "totalVolume": 38962418,
                "tradeTime": 1715877338866,
            },
        },
        "errors": {"invalidSymbols": ["NOSUCHSYM"]},
    }
    return dict(wire(body))


def trade_transaction() -> dict[str, Any]:
    body = {
        "activityId": 71813734557,
        "time": "2024-03-19T14:30:01+0000",
        "description": "",
        "accountNumber": "12345678",
        "type": "TRADE",
        "status": "VALID",
        "subAccount": "CASH",
        "tradeDate": "2024-03-19T14:30:01+0000",
        "positionId": 2487525000,
        "orderId": 1000847123456,
        "netAmount": -561.6,
        "transferItems": [
            {
                "instrument": {"assetType": "EQUITY", "symbol": "AAPL", "cusip": "037833100"},
                "amount": 3,
                "cost": -561.6,
                "price": 187.2,
                "positionEffect": "OPENING",
            }
        ],
    }
    return dict(wire(body))


def option_removal(description: str, amount: float) -> dict[str, Any]:
    """A RECEIVE_AND_DELIVER that removes an option position (spec ``Transaction`` and
    ``TransferItem``; wording and shape as recorded expirations show them)."""
    body = {
        "activityId": 71813790001,
        "time": "2024-03-16T04:56:03+0000",
        "description": description,
        "accountNumber": "12345678",
        "type": "RECEIVE_AND_DELIVER",
        "status": "VALID",
        "subAccount": "CASH",
        "tradeDate": "2024-03-15T04:00:00+0000",
        "netAmount": 0.0,
        "transferItems": [
            {
                "instrument": {
                    "assetType": "OPTION",
                    "symbol": "SPY   240315P00500000",
                    "underlyingSymbol": "SPY",
                    "putCall": "PUT",
                },
                "amount": amount,
                "cost": 0.0,
                "price": 0.0,
                "positionEffect": "CLOSING",
            }
        ],
    }
    return dict(wire(body))


def streamer_login_ok() -> str:
    # schwab-py tests/streaming_test.py success_response
    return json.dumps(
        {
            "response": [
                {
                    "service": "ADMIN",
                    "requestid": "1",
                    "command": "LOGIN",
                    "timestamp": 1591754497594,
                    "content": {"code": 0, "msg": "success"},
                }
            ]
        }
    )


def acct_activity(message_type: str, data: str) -> str:
    # schwab-py tests/streaming_test.py test_account_activity (fields 1, 2, 3)
    return json.dumps(
        {
            "data": [
                {
                    "service": "ACCT_ACTIVITY",
                    "timestamp": 1591754497594,
                    "command": "SUBS",
                    "content": [
                        {
                            "seq": 1,
                            "key": "client-correlation-id",
                            "1": "1001",
                            "2": message_type,
                            "3": data,
                        }
                    ],
                }
            ]
        }
    )


def heartbeat() -> str:
    return json.dumps({"notify": [{"heartbeat": "1591499624412"}]})
