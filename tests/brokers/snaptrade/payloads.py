"""SnapTrade payloads built from the official documents, field for field.

Values are the ``example`` values of the OpenAPI spec's schemas (passiv/snaptrade-sdks
``api.yaml``, copy in ../shared/specs/snaptrade-api.yaml) and the bodies printed in the docs
(``docs/webhooks.md``, ``docs/ratelimiting.md``, ``docs/request-signatures.md``). Where a
test needs a variant (another status, a second account) it copies one of these and changes
the field it is about.
"""

from __future__ import annotations

import copy
from typing import Any

# --- components/schemas examples ---------------------------------------------------------

CURRENCY = {
    "id": "87b24961-b51e-4db8-9226-f198f6518a89",
    "code": "USD",
    "name": "US Dollar",
}

EXCHANGE = {
    "id": "2bcd7cc3-e922-4976-bce1-9858296801c3",
    "code": "TSX",
    "mic_code": "XTSE",
    "name": "Toronto Stock Exchange",
    "timezone": "America/New_York",
    "start_time": "09:30:00",
    "close_time": "16:00:00",
    "suffix": ".TO",
}

SECURITY_TYPE = {
    "id": "2bcd7cc3-e922-4976-bce1-9858296801c3",
    "code": "cs",
    "description": "Common Stock",
    "is_supported": True,
}

# UniversalSymbol (its examples describe VAB.TO).
UNIVERSAL_SYMBOL = {
    "id": "2bcd7cc3-e922-4976-bce1-9858296801c3",
    "symbol": "VAB.TO",
    "raw_symbol": "VAB",
    "description": "VANGUARD CDN AGGREGATE BOND INDEX ETF",
    "currency": CURRENCY,
    "exchange": EXCHANGE,
    "type": SECURITY_TYPE,
    "figi_code": "BBG000B9XRY4",
    "figi_instrument": {"figi_code": "BBG000B9Y5X2", "figi_share_class": "BBG001S5N8V8"},
    "currencies": [CURRENCY],
}

# AccountOrderRecord (spec examples; universal_symbol as above).
ORDER = {
    "brokerage_order_id": "66a033fa-da74-4fcf-b527-feefdec9257e",
    "brokerage_group_order_id": None,
    "order_role": None,
    "status": "EXECUTED",
    "universal_symbol": UNIVERSAL_SYMBOL,
    "option_symbol": None,
    "quote_universal_symbol": None,
    "quote_currency": None,
    "action": "BUY",
    "total_quantity": "100",
    "open_quantity": "10",
    "canceled_quantity": "10",
    "filled_quantity": "80",
    "execution_price": "12.34",
    "limit_price": "12.34",
    "stop_price": "12.50",
    "trailing_stop": None,
    "order_type": "Market",
    "time_in_force": "Day",
    "time_placed": "2024-07-30T22:51:49.746270Z",
    "time_updated": "2024-08-05T00:05:57.409000Z",
    "time_executed": "2024-08-05T00:05:57.409000Z",
    "expiry_date": "2024-08-05T00:05:57.409000Z",
    "symbol": "2bcd7cc3-e922-4976-bce1-9858296801c3",
    "child_brokerage_order_ids": None,
}

# Account (spec examples).
ACCOUNT = {
    "id": "917c8734-8470-4a3e-a18f-57c3f2ee6631",
    "brokerage_authorization": "87b24961-b51e-4db8-9226-f198f6518a89",
    "portfolio_group": "2bcd7cc3-e922-4976-bce1-9858296801c3",
    "name": "Robinhood Individual",
    "number": "Q6542138443",
    "institution_account_id": "54953432",
    "institution_name": "Robinhood",
    "created_date": "2024-07-23T22:50:22.761390Z",
    "funding_date": "2024-07-25T12:00:00.000000Z",
    "opening_date": "2024-07-20T09:30:00.000000Z",
    "sync_status": {
        "transactions": {
            "initial_sync_completed": True,
            "last_successful_sync": "2022-01-24",
            "first_transaction_date": "2022-01-24",
        },
        "holdings": {
            "initial_sync_completed": True,
            "last_successful_sync": "2024-06-28 18:42:46.561408+00:00",
            "holdings_unavailable": True,
        },
    },
    "balance": {"total": {"amount": 15363.23, "currency": "USD"}},
    "status": "open",
    "raw_type": "Margin",
    "account_category": "INVESTMENT",
    "meta": {"type": "Margin", "status": "ACTIVE", "institution_name": "Robinhood"},
    "cash_restrictions": [],
    "is_paper": False,
}

# Brokerage (spec examples: Robinhood).
BROKERAGE = {
    "id": "ebf91a5b-0920-4266-9e36-f6cfe8c40946",
    "slug": "ROBINHOOD",
    "name": "Robinhood",
    "display_name": "Robinhood",
    "description": "Robinhood is an American multinational financial services corporation "
    "based in Menlo Park, California.",
    "aws_s3_logo_url": "https://passiv-brokerage-logos.s3.ca-central-1.amazonaws.com/"
    "robinhood-logo.png",
    "aws_s3_square_logo_url": "https://passiv-brokerage-logos.s3.ca-central-1.amazonaws.com/"
    "robinhood-logo-square.png",
    "url": "https://robinhood.com",
    "enabled": True,
    "maintenance_mode": True,
    "is_degraded": True,
    "allows_trading": True,
    "allows_fractional_units": True,
    "has_reporting": True,
    "is_real_time_connection": True,
    "brokerage_type": {
        "id": "2bcd7cc3-e922-4976-bce1-9858296801c3",
        "name": "Traditional Brokerage",
    },
    "exchanges": ["2bcd7cc3-e922-4976-bce1-9858296801c3", "4bcd8cc3-c122-4974-dc21-1858296801f4"],
    "open_url": None,
}

# BrokerageAuthorization (spec examples).
AUTHORIZATION = {
    "id": "87b24961-b51e-4db8-9226-f198f6518a89",
    "created_date": "2024-08-20T21:56:19.123935Z",
    "brokerage": BROKERAGE,
    "name": "Connection-1",
    "type": "trade",
    "disabled": False,
    "disabled_date": "2022-01-21T15:11:19.217000-05:00",
    "meta": {"identifier": 123456},
    "updated_date": "2024-08-20T21:56:20.057224Z",
    "is_eligible_for_payout": True,
    "data_freshness_mode": "realtime",
}

# Balance (spec examples).
BALANCES = [{"currency": CURRENCY, "cash": 300.71, "buying_power": 410.71}]

# AllAccountPositionsResponse (StockInstrument and AccountPosition examples).
POSITIONS = {
    "results": [
        {
            "instrument": {
                "kind": "stock",
                "id": "1ef3a5d3-4a9b-40b2-b8d1-cc35f74d6324",
                "symbol": "AAPL",
                "raw_symbol": "AAPL",
                "description": "Apple Inc.",
                "currency": "USD",
                "exchange": "XNAS",
                "figi_instrument": None,
            },
            "units": "10.5",
            "price": "123.45",
            "cost_basis": "118.2",
            "currency": "USD",
        }
    ],
    "data_freshness": {"as_of": "2026-06-02T14:30:00Z"},
}

# ManualTradeAndImpact (ManualTrade, ManualTradeImpact, ManualTradeBalance examples).
IMPACT = {
    "trade": {
        "id": "139e307a-82f7-4402-b39e-4da7baa87758",
        "account": "917c8734-8470-4a3e-a18f-57c3f2ee6631",
        "order_type": "Market",
        "time_in_force": "Day",
        "symbol": {
            "universal_symbol_id": "2bcd7cc3-e922-4976-bce1-9858296801c3",
            "currency": CURRENCY,
            "local_id": "1048101",
            "description": "Metaverse Global ETF",
            "symbol": "MVGP.U.TO",
            "brokerage_symbol_id": "2bcd7cc3-e922-4976-bce1-9858296801c3",
        },
        "action": "BUY",
        "units": 10.5,
        "price": 31.33,
    },
    "trade_impacts": [
        {
            "account": "917c8734-8470-4a3e-a18f-57c3f2ee6631",
            "currency": "87b24961-b51e-4db8-9226-f198f6518a89",
            "remaining_cash": 1.11,
            "estimated_commission": 3.26,
            "forex_fees": 5.26,
        }
    ],
    "combined_remaining_balance": {
        "account": {
            "id": "917c8734-8470-4a3e-a18f-57c3f2ee6631",
            "name": "Robinhood Individual",
            "number": "Q6542138443",
            "institution_account_id": "54953432",
        },
        "currency": CURRENCY,
        "cash": 1.11,
    },
}

# SymbolsQuotes (spec examples).
QUOTES = [
    {
        "symbol": UNIVERSAL_SYMBOL,
        "last_trade_price": 8.74,
        "bid_price": 8.43,
        "ask_price": 8.43,
        "bid_size": 260,
        "ask_size": 344,
    }
]

# PaginatedUniversalActivity (AccountUniversalActivity and Symbol examples).
ACTIVITIES = {
    "data": [
        {
            "id": "2f7dc9b3-5c33-4668-3440-2b31e056ebe6",
            "symbol": {
                "id": "2bcd7cc3-e922-4976-bce1-9858296801c3",
                "symbol": "VAB.TO",
                "raw_symbol": "VAB",
                "description": "VANGUARD CDN AGGREGATE BOND INDEX ETF",
                "currency": CURRENCY,
                "exchange": EXCHANGE,
                "type": SECURITY_TYPE,
                "figi_code": "BBG000B9XRY4",
                "figi_instrument": None,
            },
            "currency_universal_symbol": None,
            "option_symbol": None,
            "price": 0.4,
            "units": 5.2,
            "amount": 263.82,
            "currency": CURRENCY,
            "type": "BUY",
            "option_type": "BUY_TO_OPEN",
            "description": "WALT DISNEY UNIT DIST ON 21 SHS REC 12/31/21 PAY 01/06/22",
            "trade_date": "2024-03-22T16:27:55Z",
            "settlement_date": "2024-03-26T00:00:00Z",
            "fee": 0,
            "fx_rate": 1.032,
            "institution": "Robinhood",
            "external_reference_id": "2f7dc9b3-5c33-4668-3440-2b31e056ebe6",
        }
    ],
    "pagination": {"offset": 0, "limit": 100, "total": 1},
}

# LoginRedirectURI and UserIDandSecret (spec examples).
LOGIN = {
    "redirectURI": "https://app.snaptrade.com/snapTrade/redeemToken?token=npVKchZrL0MYIHTusGfADT74r4xX"
    "pHkmbxbQDmt0RINLXbQ5cWsvGkPSgMQRxz8/cnxjzL9T2NWLuHuDyidHiCNeXXTb/tVhzC2olSyfxWW6DRrkUppArG"
    "CdmkIHyBMzog6C55P8yoqzcGer5Hml0Q%3D%3D&clientId=WEALTHLY&broker=ROBINHOOD&connectionPortal"
    "Version=v4&sessionId=cf371bb4-a475-4f17-ab94-d0fee699960d",
    "sessionId": "cf371bb4-a475-4f17-ab94-d0fee699960d",
}
REGISTERED = {
    "userId": "snaptrade-user-123",
    "userSecret": "adf2aa34-8219-40f7-a6b3-60156985cc61",
}
CANCELED = {
    "brokerage_order_id": "66a033fa-da74-4fcf-b527-feefdec9257e",
    "raw_response": {"order_id": "1234567890", "status": "CANCELLED"},
}

# --- errors (docs/ratelimiting.md verbatim; spec 4xx/5xx examples) -------------------------

THROTTLED = {
    "detail": "Request was throttled. Expected available in 7 seconds.",
    "status_code": 429,
    "code": "0000",
}
BAD_SIGNATURE = {"default_detail": "Unable to verify signature sent", "default_code": 1076}
NOT_FOUND = {"default_detail": "The requested resource does not exist.", "default_code": 1011}
FORBIDDEN = {
    "default_detail": "User does not have permission to access this resource",
    "default_code": 1066,
}
FEATURE_OFF = {
    "detail": "Feature is not enabled for this customer or this connection",
    "default_code": 1141,
}
BUSY = {
    "detail": "Unable to sync with brokerage account. Invalid response from Brokerage API.",
    "status_code": 503,
    "code": 3002,
}
DISABLED = {
    "detail": "Unable to sync with brokerage account because the connection is disabled.",
    "code": 3003,
}
NOT_IMPLEMENTED = {
    "error": "The orders endpoint is not yet implemented for brokerage some-brokerage"
}

# --- webhooks (docs/webhooks.md) ----------------------------------------------------------

WEBHOOK_CONNECTION_ADDED = {
    "webhookId": "7467e5e4-4b59-4514-9d04-d05dbc10dea9",
    "clientId": "cJEQQgtDIb",
    "eventTimestamp": "2022-05-31T11:13:37.269120+00:00",
    "userId": "oWbLZ3OWsO3Nt8DKJnYxM32wLLD6h6SVj0ywkDmypUlkWkqsI5",
    "eventType": "CONNECTION_ADDED",
    "brokerageId": "c8153291-0761-43a8-8ed0-4642103c2cb8",
    "brokerageAuthorizationId": "a0231bd2-9b77-4732-ba78-f9c6af6a1a62",
    "webhookSecret": "ZSDkaLCRJndeZGgeaJnV",
}
WEBHOOK_HOLDINGS_UPDATED = {
    "userId": "60b9ad5f-8e78-43b2-af5a-8ce8412b1cd6",
    "clientId": "PARTNERAPP",
    "accountId": "45a3g56a-eef6-4904-a68e-d3f90c3e07c5",
    "eventType": "ACCOUNT_HOLDINGS_UPDATED",
    "webhookId": "312a13f3-3929-46dd-a70f-ade6aaefc100",
    "brokerageId": "905872ac-a7b1-4031-a31f-790cba1bfc94",
    "webhookSecret": "yfqvPlWrTFILBcjCERPh",
    "eventTimestamp": "2024-03-01T14:38:13.111991+00:00",
    "brokerageAuthorizationId": "6bb1ahb0-b8c8-4b59-8bf9-7841d7a89c63",
    "details": {
        "total_value": {"success": True, "error": None},
        "positions": {"success": True, "error": None},
        "balances": {"success": True, "error": None},
        "orders": {"success": True, "error": None},
    },
}
WEBHOOK_USER_REGISTERED = {
    "webhookId": "dbaee13a-1184-4677-9741-b6845e60ee3a",
    "clientId": "phjBdpKfpN",
    "eventTimestamp": "2022-05-31T11:16:54.658533+00:00",
    "userId": "qQYISR9xcmR8ZtVHNgg1lbYgSQcxafPqPW0ZbE0yaA6ham6n54",
    "eventType": "USER_REGISTERED",
    "webhookSecret": "lgCQWztweEFcHvjdLhHc",
}

# --- request signing (docs/request-signatures.md) ------------------------------------------

SIGNING_PATH = "/api/v1/symbols"
SIGNING_QUERY = "clientId=YOUR_CLIENT_ID&timestamp=1715123456"
SIGNING_BODY = {"substring": "AAPL"}
SIGNING_CANONICAL = (
    '{"content":{"substring":"AAPL"},"path":"/api/v1/symbols",'
    '"query":"clientId=YOUR_CLIENT_ID&timestamp=1715123456"}'
)


def variant(payload: dict[str, Any], **changes: Any) -> dict[str, Any]:
    """A deep copy of ``payload`` with top-level fields changed."""
    result = copy.deepcopy(payload)
    result.update(changes)
    return result
