"""IBKR Client Portal Web API payloads.

Recorded answers from ``Voyz/ibind`` ``test/integration/client/ibkr_responses.py``
(``auth_status``, ``tickle``, ``positions``, ``live_orders``, ``order_status``), trimmed to
the fields used and with ibind's ``DUMMY_ACCOUNT_ID123`` kept; the order acknowledgement,
question and cancel answers as IBKR Campus documents them
(https://www.interactivebrokers.com/campus/ibkr-api-page/cpapi-v1/#place-order, "Place
Order", "Place Order Reply Confirmation", "Cancel Order"); the summary, search, snapshot and
trade shapes of the same reference (values illustrative). JSON numbers with fractions are
``Decimal``: that is what ``response.json(parse_float=Decimal)`` produces.
"""

from __future__ import annotations

from decimal import Decimal as D
from typing import Any

ACCOUNT = "DUMMY_ACCOUNT_ID123"

AUTH_STATUS: dict[str, Any] = {
    "MAC": "F4:03:43:CD:BD:C0",
    "authenticated": True,
    "competing": False,
    "connected": True,
    "fail": "",
    "hardware_info": "1c4558e8|F4:03:43:CD:BD:C0",
    "message": "",
    "serverInfo": {
        "serverName": "JifC11113",
        "serverVersion": "Build 10.25.0m, Nov 17, 2023 11:29:27 AM",
    },
}

TICKLE: dict[str, Any] = {
    "collission": False,
    "hmds": {"error": "no bridge"},
    "iserver": {"authStatus": {**AUTH_STATUS}},
    "session": "ce109cbeb462a76dc3f6f4182c830cc1",
    "ssoExpires": 585695,
    "userId": 99996016,
}

ISERVER_ACCOUNTS: dict[str, Any] = {
    "accounts": [ACCOUNT],
    "selectedAccount": ACCOUNT,
    "isPaper": True,
}

POSITION: dict[str, Any] = {
    "acctId": ACCOUNT,
    "assetClass": "STK",
    "avgCost": D("437.43"),
    "avgPrice": D("437.43"),
    "conid": 756733,
    "contractDesc": "SPY",
    "currency": "USD",
    "listingExchange": "ARCA",
    "mktPrice": D("454.44000245"),
    "mktValue": D("45444.0"),
    "pageSize": 100,
    "position": D("100.0"),
    "realizedPnl": D("0.0"),
    "ticker": "SPY",
    "unrealizedPnl": D("1701.0"),
}

LIVE_ORDER: dict[str, Any] = {
    "account": ACCOUNT,
    "acct": ACCOUNT,
    "companyName": "SPDR S&P 500 ETF TRUST",
    "conid": 756733,
    "conidex": "756733",
    "description1": "SPY",
    "filledQuantity": D("0.0"),
    "lastExecutionTime": "240103201041",
    "lastExecutionTime_r": 1704312641000,
    "listingExchange": "ARCA",
    "orderDesc": "Buy 1 Limit 457.00, GTC",
    "orderId": 1210386759,
    "orderType": "Limit",
    "order_ccp_status": "Submitted",
    "order_ref": "240103-SPY-1-BUY-L@457-bxv8",
    "origOrderType": "LIMIT",
    "outsideRTH": False,
    "price": "457.00",
    "remainingQuantity": D("1.0"),
    "secType": "STK",
    "side": "BUY",
    "sizeAndFills": "0/1",
    "status": "PreSubmitted",
    "ticker": "SPY",
    "timeInForce": "GTC",
    "totalSize": D("1.0"),
}

ORDER_STATUS: dict[str, Any] = {
    "account": ACCOUNT,
    "cannot_cancel_order": False,
    "conid": 756733,
    "cum_fill": "0.0",
    "currency": "USD",
    "limit_price": "457.00",
    "listing_exchange": "ARCA",
    "order_id": 1210386759,
    "order_status": "PreSubmitted",
    "order_status_description": "Order Submitted",
    "order_time": "240103201041",
    "order_type": "LIMIT",
    "outside_rth": False,
    "sec_type": "STK",
    "side": "B",
    "size": "1.0",
    "size_and_fills": "0/1",
    "symbol": "SPY",
    "tif": "GTC",
    "total_size": "1.0",
}

ACK: list[dict[str, Any]] = [
    {"order_id": "1210386759", "order_status": "Submitted", "encrypt_message": "1"}
]

QUESTION: list[dict[str, Any]] = [
    {
        "id": "07a13a5a-4a48-44a5-bb25-5ab37b79186c",
        "message": [
            'The following order "BUY 1 SPY @ 457.00" price exceeds \n'
            "the Percentage constraint of 3%.\nAre you sure you want to submit this order?"
        ],
        "isSuppressed": False,
        "messageIds": ["o163"],
    }
]

CANCELED: dict[str, Any] = {
    "msg": "Request was submitted",
    "order_id": 1210386759,
    "conid": 756733,
    "account": ACCOUNT,
}

SEARCH: list[dict[str, Any]] = [
    {
        "conid": "756733",
        "companyHeader": "SPDR S&P 500 ETF TRUST - ARCA",
        "companyName": "SPDR S&P 500 ETF TRUST",
        "symbol": "SPY",
        "description": "ARCA",
        "restricted": None,
        "sections": [{"secType": "STK"}, {"secType": "OPT", "months": "JAN27"}],
    }
]

SUMMARY: dict[str, Any] = {
    "totalcashvalue": {"amount": D("985376.94"), "currency": "USD", "isNull": False},
    "netliquidation": {"amount": D("1034222.25"), "currency": "USD", "isNull": False},
    "buyingpower": {"amount": D("3941507.76"), "currency": "USD", "isNull": False},
}

SNAPSHOT_PRIMING: list[dict[str, Any]] = [{"conid": 756733, "conidEx": "756733"}]
SNAPSHOT: list[dict[str, Any]] = [
    {
        "conid": 756733,
        "conidEx": "756733",
        "31": "454.44",
        "84": "454.43",
        "86": "454.45",
        "_updated": 1704312641000,
    }
]

TRADES: list[dict[str, Any]] = [
    {
        "execution_id": "0000e0d5.6576fd38.01.01",
        "symbol": "SPY",
        "side": "B",
        "order_description": "Bot 1 @ 456.99 on ARCA",
        "trade_time": "20240103-20:11:02",
        "trade_time_r": 1704312662000,
        "size": D("1.0"),
        "price": "456.99",
        "order_ref": "240103-SPY-1-BUY-L@457-bxv8",
        "account": ACCOUNT,
        "conid": 756733,
        "sec_type": "STK",
    }
]
